"""Datasets and the GPT-2 tokenizer. Heavy imports (tokenizers) happen on first use only."""

from edgegen.data.celeba import CelebA
from edgegen.data.cifar import CIFAR10
from edgegen.data.openwebtext import OpenWebText
from edgegen.data.root import data_root, dataset_dir
from edgegen.data.tokenizer import GPT2Tokenizer, download_gpt2_tokenizer
from edgegen.data.wikitext import WikiText2

__all__ = ["data_root", "dataset_dir", "GPT2Tokenizer", "WikiText2", "CIFAR10", "CelebA", "OpenWebText", "download_gpt2_tokenizer"]
