"""CelebA reader on JPEG fixtures in the official layout, and on the real subset if present."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgegen.data import CelebA

REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))
NAMES = ["5_o_Clock_Shadow", "Smiling", "Young"]


def make_celeba(root: Path, parts=(0, 0, 0, 1, 2), attributes=True) -> Path:
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rows, attr_rows = [], []
    for i, part in enumerate(parts, 1):
        name = f"{i:06d}.jpg"
        # Green frame around a blue 148x148 center: the default crop keeps only the blue.
        arr = np.zeros((218, 178, 3), np.uint8)
        arr[..., 1] = 200
        arr[35:183, 15:163] = (0, 0, 220)
        Image.fromarray(arr).save(folder / "img_align_celeba" / name, quality=95)
        rows.append(f"{name} {part}\r\n")
        attr_rows.append(f"{name}  {' '.join('1' if (i + k) % 2 else '-1' for k in range(3))}\r\n")
    (folder / "list_eval_partition.txt").write_bytes("".join(rows).encode())
    if attributes:
        text = f"{len(parts)}\r\n{' '.join(NAMES)}\r\n" + "".join(attr_rows)
        (folder / "list_attr_celeba.txt").write_bytes(text.encode())
    return folder


def test_splits_crop_and_attributes(tmp_path):
    make_celeba(tmp_path)
    train = CelebA(tmp_path, split="train", cache_dir=tmp_path / "c")
    assert len(train) == 3 and len(CelebA(tmp_path, split="valid")) == 1
    assert len(CelebA(tmp_path, split="all", cache_dir=tmp_path / "c")) == 5
    x, attrs = train[1]
    assert x.shape == (3, 64, 64) and -1 <= x.min() and x.max() <= 1
    mean = x.mean(dim=(1, 2))
    assert mean[2] > 0.5 and mean[1] < -0.8  # blue center kept, green frame cropped away
    assert train.attr_names == NAMES
    assert attrs.tolist() == [0, 1, 0]  # image 2: values -1, 1, -1
    assert any(p.name.startswith("celeba.train.148.64.") for p in (tmp_path / "c").iterdir())
    cached = CelebA(tmp_path, split="train", cache_dir=tmp_path / "c")
    assert isinstance(cached.images, np.memmap)
    torch.testing.assert_close(cached[1][0], x)


def test_without_attributes(tmp_path):
    make_celeba(tmp_path, attributes=False)
    ds = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")
    assert len(ds) == 1 and ds[0][1].numel() == 0


def test_bad_images_and_files(tmp_path):
    folder = make_celeba(tmp_path)
    img = folder / "img_align_celeba"
    Image.new("RGB", (64, 64)).save(img / "000001.jpg")
    with pytest.raises(ValueError, match=r"000001.jpg: expected 178x218"):
        CelebA(tmp_path, split="train", cache_dir=tmp_path / "c1").images
    Image.new("L", (178, 218)).save(img / "000001.jpg")
    with pytest.raises(ValueError, match=r"000001.jpg: expected an RGB image"):
        CelebA(tmp_path, split="train", cache_dir=tmp_path / "c2").images
    (img / "000001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match=r"000001.jpg: not a readable JPEG"):
        CelebA(tmp_path, split="train", cache_dir=tmp_path / "c3").images
    (img / "000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 images listed .* missing, first .*000002.jpg"):
        CelebA(tmp_path, split="train")
    (folder / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:1: expected"):
        CelebA(tmp_path)
    with pytest.raises(ValueError, match="split"):
        CelebA(tmp_path, split="val")
    with pytest.raises(ValueError, match="image_size"):
        CelebA(tmp_path, image_size=200)
    with pytest.raises(FileNotFoundError, match="expected .*celeba"):
        CelebA(tmp_path / "nowhere")


def make_coded_celeba(root: Path) -> np.ndarray:
    """One image whose pixels say where they are (red: the row, blue: the column, green: 1-px
    vertical stripes); returns the decoded JPEG as [218, 178, 3] (JPEG is lossy: the reference)."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[..., 0] = np.arange(218)[:, None]
    arr[..., 1] = (np.arange(178)[None, :] % 2) * 255
    arr[..., 2] = np.arange(178)[None, :]
    path = folder / "img_align_celeba" / "000001.jpg"
    Image.fromarray(arr).save(path, quality=100, subsampling=0)
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


# (crop, top, left): the centered window of a 178x218 image, (218 - crop) // 2 and (178 - crop) // 2
@pytest.mark.parametrize("crop, top, left", [(148, 35, 15), (140, 39, 19)], ids=["crop148", "crop140"])
def test_crop_is_the_centered_window_of_the_decoded_image(tmp_path, crop, top, left):
    decoded = make_coded_celeba(tmp_path)
    got = CelebA(tmp_path, split="all", crop=crop, image_size=crop, cache_dir=tmp_path / "c").images[0]
    expected = decoded[top:top + crop, left:left + crop].transpose(2, 0, 1)
    assert got.shape == (3, crop, crop)
    np.testing.assert_array_equal(got, expected)
    # the fixture's codes survive JPEG to within a few levels: first and last row, first and last column
    assert abs(int(got[0, 0, 0]) - top) <= 3 and abs(int(got[0, -1, 0]) - (top + crop - 1)) <= 3
    assert abs(int(got[2, 0, 0]) - left) <= 3 and abs(int(got[2, 0, -1]) - (left + crop - 1)) <= 3


def test_resize_is_bilinear_on_the_cropped_window(tmp_path):
    decoded = make_coded_celeba(tmp_path)
    got = CelebA(tmp_path, split="all", cache_dir=tmp_path / "c").images[0]  # crop 148, image_size 64
    window = Image.fromarray(np.ascontiguousarray(decoded[35:183, 15:163]))
    expected = np.asarray(window.resize((64, 64), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, expected)
    # 1-px stripes average out when 148 columns become 64 (nearest neighbour would keep 0 and 255)
    green = got[1].astype(np.float64)
    assert green.std() < 40 and 60 < green.mean() < 195


@pytest.mark.parametrize("crop", [300, 179, 7], ids=["crop300", "crop179", "crop7"])
def test_crop_outside_the_image_is_refused(tmp_path, crop):
    make_coded_celeba(tmp_path)
    with pytest.raises(ValueError, match=rf"crop: expected an int in \[8, 178\], got {crop}$"):
        CelebA(tmp_path, split="all", crop=crop, image_size=8, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(not (REAL / "celeba" / "list_eval_partition.txt").is_file(),
                    reason="EDGEGEN_DATA_DIR does not hold celeba/")
def test_real_celeba_subset(tmp_path):
    # The staged subset: 3,000 train, 500 valid, 500 test images (its README).
    assert [len(CelebA(REAL, split=s)) for s in ("train", "valid", "test")] == [3000, 500, 500]
    test = CelebA(REAL, split="test", cache_dir=tmp_path)
    x, attrs = test[0]
    assert x.shape == (3, 64, 64) and attrs.shape == (40,)
    assert test.images.shape == (500, 3, 64, 64)
    assert test.attr_names[:2] == ["5_o_Clock_Shadow", "Arched_Eyebrows"]


def test_replaced_image_is_decoded_again(tmp_path):
    folder = make_celeba(tmp_path)
    first = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")[0][0]
    assert first.mean(dim=(1, 2))[2] > 0.5  # the fixture's blue center
    # Same name, new pixels (a red center), a later modification time.
    path = folder / "img_align_celeba" / "000005.jpg"
    old = path.stat().st_mtime_ns
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[35:183, 15:163] = (230, 0, 0)
    Image.fromarray(arr).save(path, quality=95)
    os.utime(path, ns=(old + 10**9, old + 10**9))
    again = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")
    fresh = CelebA(tmp_path, split="test", cache_dir=tmp_path / "fresh")
    torch.testing.assert_close(again[0][0], fresh[0][0], rtol=0, atol=0)
    assert again[0][0].mean(dim=(1, 2))[0] > 0.5 and not torch.equal(again[0][0], first)
    assert len([p for p in (tmp_path / "c").iterdir() if p.name.startswith("celeba.test.148.64.")]) == 2


@pytest.mark.parametrize("name", ["list_eval_partition.txt", "list_attr_celeba.txt"])
def test_non_utf8_lists_name_the_file(tmp_path, name):
    folder = make_celeba(tmp_path)
    (folder / name).write_bytes(b"\xff\xfe0\x001\x00")  # UTF-16, not UTF-8
    with pytest.raises(ValueError, match=f"celeba/{name}: expected UTF-8 text"):
        CelebA(tmp_path, split="all", cache_dir=tmp_path / "c")


def test_split_without_rows_names_the_partition_file_and_split(tmp_path):
    folder = make_celeba(tmp_path, parts=(0, 0, 2))  # a subset listing no valid image
    with pytest.raises(ValueError, match=r"celeba/list_eval_partition.txt: no rows of the valid split "
                                         r"\(partition 1\); expected '<file> <0\|1\|2>' lines"):
        CelebA(tmp_path, split="valid", cache_dir=tmp_path / "c")
    (folder / "list_eval_partition.txt").write_bytes(b"\r\n")  # no rows at all
    for split in ("all", "train"):
        with pytest.raises(ValueError, match=r"celeba/list_eval_partition.txt: no rows"):
            CelebA(tmp_path, split=split, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # no empty array cached


# list_eval_partition.txt in name order, the splits interleaved: valid and test hold as many images
# each, so only their names tell them apart.
INTERLEAVED = (2, 0, 1, 0, 2, 1, 0)


@pytest.mark.parametrize("split, names", [
    ("train", ["000002.jpg", "000004.jpg", "000007.jpg"]),
    ("valid", ["000003.jpg", "000006.jpg"]),
    ("test", ["000001.jpg", "000005.jpg"]),
    ("all", ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg", "000005.jpg", "000006.jpg", "000007.jpg"]),
], ids=["train", "valid", "test", "all"])
def test_each_split_holds_the_files_its_partition_lists_in_file_order(tmp_path, split, names):
    folder = make_celeba(tmp_path, parts=INTERLEAVED)
    ds = CelebA(tmp_path, split=split, cache_dir=tmp_path / "c")
    assert ds.files == [folder / "img_align_celeba" / n for n in names]
    assert len(ds) == len(names)
    # make_celeba's attribute rows: odd-numbered images 1, -1, 1; even-numbered ones -1, 1, -1
    odd, even = [1, 0, 1], [0, 1, 0]
    assert ds.attributes.tolist() == [odd if int(n[:6]) % 2 else even for n in names]
    assert ds[len(names) - 1][1].tolist() == (odd if int(names[-1][:6]) % 2 else even)


def _write_attributes(folder: Path, rows: list) -> Path:
    """list_attr_celeba.txt as published: a count line, 40 names, then '<file>' and 40 values."""
    names = [f"Attribute_{k}" for k in range(40)]
    path = folder / "list_attr_celeba.txt"
    path.write_bytes((f"{len(rows)}\r\n{' '.join(names)}\r\n" + "".join(r + "\r\n" for r in rows)).encode())
    return path


def test_an_attribute_file_without_a_row_for_a_listed_image_names_the_count_and_the_first(tmp_path):
    folder = make_celeba(tmp_path)  # images 1, 2, 3 train, 4 valid, 5 test
    values = " ".join(["1", "-1"] * 20)
    _write_attributes(folder, [f"{i:06d}.jpg {values}" for i in (1, 3, 5)])  # none for 2 and 4
    with pytest.raises(ValueError, match=r"celeba/list_attr_celeba.txt: no row for 2 images, first 000002.jpg$"):
        CelebA(tmp_path, split="all", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match=r"celeba/list_attr_celeba.txt: no row for 1 images, first 000002.jpg$"):
        CelebA(tmp_path, split="train", cache_dir=tmp_path / "c")
    test = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")  # image 5 has its row
    assert test.attributes.tolist() == [[1, 0] * 20] and len(test.attr_names) == 40


@pytest.mark.parametrize("bad", [" ".join(["1"] * 39), " ".join(["1"] * 39 + ["0"]), " ".join(["1"] * 41)],
                         ids=["39-values", "value-0", "41-values"])
def test_a_malformed_attribute_line_names_the_file_and_line(tmp_path, bad):
    folder = make_celeba(tmp_path)
    good = " ".join(["-1"] * 40)
    # lines 1-2 are the header: image 3's row is line 5
    _write_attributes(folder, [f"000001.jpg {good}", f"000002.jpg {good}", f"000003.jpg {bad}",
                               f"000004.jpg {good}", f"000005.jpg {good}"])
    with pytest.raises(ValueError, match=r"celeba/list_attr_celeba.txt:5: expected '<file>' and 40 values of 1/-1$"):
        CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")
