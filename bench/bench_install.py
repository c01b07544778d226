"""Benchmark: installing a 50 MB package with the release store vs sha256sum + tar -xzf.

Run: ``python bench/bench_install.py [--mb 50] [--runs 5] [--file-kb 16]``. Builds a package of
mixed compressible and incompressible files, then times, on the same payload in the
same run, (a) ``ReleaseStore.stage`` + ``switch`` (verify signature, single-pass
extract with per-file SHA-256 and fsync, seal, atomic switch) and (b) ``sha256sum``
of the payload followed by ``tar -xzf``. Prints the medians and the ratio; the
target is a ratio of at most 1.5.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from fleetwave_agent.keys import Keyring, generate_keypair, load_public_key
from fleetwave_agent.package import build_package, read_header
from fleetwave_agent.store import ReleaseStore


def make_tree(src: Path, total_mb: int, file_kb: int | None = None) -> None:
    """Alternating random (incompressible) and text files of 4 KiB to 4 MiB each,
    or all of ``file_kb`` KiB when given (many small files: the per-file cost)."""
    rng = random.Random(1234)
    written = 0
    index = 0
    target = total_mb << 20
    while written < target:
        sizes = [file_kb << 10] if file_kb else [4 << 10, 64 << 10, 512 << 10, 4 << 20]
        size = min(rng.choice(sizes), target - written)
        if index % 2:
            data = rng.randbytes(size)
        else:
            line = f"line {index} of some fairly repetitive text payload\n".encode()
            data = (line * (size // len(line) + 1))[:size]
        path = src / f"d{index % 16:02d}" / f"f{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += size
        index += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--file-kb", type=int, help="make every file this many KiB")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fw-bench-", dir="/var/tmp"))
    try:
        src = work / "src"
        make_tree(src, args.mb, args.file_kb)
        private, public = generate_keypair(work / "keys")
        package = build_package(
            src, name="bench", version="1", private_key=private, out_dir=work, created=0
        )
        keyring = Keyring.from_keys([load_public_key(public)])
        header = read_header(package)
        payload = work / "payload.tar.gz"
        with package.open("rb") as fh, payload.open("wb") as out:
            fh.seek(header.payload_offset)
            shutil.copyfileobj(fh, out, 1 << 20)
        print(
            f"package {package.stat().st_size / 1e6:.1f} MB, "
            f"{len(header.manifest.files)} files, "
            f"{sum(f.size for f in header.manifest.files) / 1e6:.1f} MB expanded"
        )

        ours: list[float] = []
        theirs: list[float] = []
        for run in range(args.runs):
            root = work / f"store{run}"
            start = time.perf_counter()
            store = ReleaseStore(root)
            with store.lock():
                store.switch(store.stage(package, keyring, now=time.time()))
            ours.append(time.perf_counter() - start)

            dest = work / f"tar{run}"
            dest.mkdir()
            start = time.perf_counter()
            subprocess.run(["sha256sum", str(payload)], check=True, capture_output=True)
            subprocess.run(["tar", "-xzf", str(payload), "-C", str(dest)], check=True)
            theirs.append(time.perf_counter() - start)
            for path in (root, dest):
                for dirpath, _, _ in os.walk(path):
                    os.chmod(dirpath, 0o700)
                shutil.rmtree(path)

        ours_median = statistics.median(ours)
        theirs_median = statistics.median(theirs)
        print(f"store install (verify+extract+switch): median {ours_median * 1000:.0f} ms")
        print(f"sha256sum + tar -xzf:                  median {theirs_median * 1000:.0f} ms")
        print(f"ratio: {ours_median / theirs_median:.2f}x (target <= 1.5x)")
    finally:
        for dirpath, _, _ in os.walk(work):
            os.chmod(dirpath, 0o700)
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
