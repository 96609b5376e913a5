#!/usr/bin/env python3
"""Refuse a shared object that carries its own copy of the C++ runtime.

Some toolchains (custom compiler wrappers, conda compilers) link libstdc++ statically into every
shared object. Loaded into a Python process that already holds torch's libstdc++, such an
extension has two C++ runtimes, and the first exception whose message is formatted through
std::ostream (every TORCH_CHECK failure) crashes the interpreter instead of raising.

Usage: check_cxx_runtime.py LIBRARY [--compiler CXX] [--nm NM] [--readelf READELF]
Exit status 0 when LIBRARY needs libstdc++.so dynamically and defines none of its internals;
1 (with a message naming the compiler and the fix) otherwise; 2 when the tools are missing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

# Symbols only libstdc++/libsupc++ themselves define. A normal build that links libstdc++ as a
# shared library never defines them: the ostream inserters are extern templates explicitly
# instantiated inside libstdc++, and the rest are ordinary non-template functions there.
_RUNTIME_SYMBOL = re.compile(
    r"^(_ZNSo9_M_insertI\w*"          # std::ostream::_M_insert<T>
    r"|_ZNSt6localeC[12]Ev"           # std::locale::locale()
    r"|_ZNSt8ios_base4InitC[12]Ev"    # std::ios_base::Init::Init()
    r"|__cxa_throw|__cxa_allocate_exception)$"
)


def _run(tool: str, *args: str) -> str:
    return subprocess.run([tool, *args], check=True, capture_output=True, text=True).stdout


def runtime_problems(library: str, nm: str = "nm", readelf: str = "readelf") -> list[str]:
    """What is wrong with `library`'s C++ runtime linkage (empty list: nothing)."""
    problems = []
    defined = []
    for line in _run(nm, "-D", "--defined-only", library).splitlines():
        parts = line.split()
        if len(parts) >= 3 and _RUNTIME_SYMBOL.match(parts[2]):
            defined.append(parts[2])
    if defined:
        problems.append(f"it defines {len(defined)} of libstdc++'s own symbols (e.g. {defined[0]}): "
                        "libstdc++ was linked statically into it")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _run(readelf, "-d", library))
    if not any(n.startswith("libstdc++.so") for n in needed):
        problems.append("libstdc++.so is not among its dynamic dependencies (NEEDED: "
                        + (", ".join(needed) or "none") + ")")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library")
    ap.add_argument("--compiler", default="the C++ compiler")
    ap.add_argument("--nm", default="nm")
    ap.add_argument("--readelf", default="readelf")
    args = ap.parse_args(argv)
    for tool in (args.nm, args.readelf):
        if shutil.which(tool) is None:
            print(f"check_cxx_runtime: '{tool}' not found (binutils); cannot check {args.library}", file=sys.stderr)
            return 2
    problems = runtime_problems(args.library, args.nm, args.readelf)
    if not problems:
        return 0
    print(f"edgegen: {args.library} carries its own C++ runtime: " + "; ".join(problems) + ".\n"
          f"The compiler {args.compiler} links libstdc++ statically into shared objects. Inside Python the "
          "process already holds torch's libstdc++, and with two runtimes the first C++ error message "
          "crashes the interpreter. Rebuild with a compiler that links libstdc++ as a shared library, "
          "e.g. the system one: CXX=/usr/bin/g++ pip install --no-build-isolation -e .",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
