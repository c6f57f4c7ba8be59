#!/usr/bin/env python3
"""Runs a wasm32-wasip1 program (a cargo test binary) under Wasmtime, as a cargo target runner.

Usage: wasi-run.py PROGRAM.wasm [ARGS...]. Stdio is inherited and the current directory is
preopened, so `cargo test --target wasm32-wasip1` behaves as it does natively. Exits with the
program's exit status.
"""

import os
import sys

import wasmtime


def main() -> int:
    program, args = sys.argv[1], sys.argv[1:]
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = args
    wasi.inherit_stdin()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    wasi.env = [(k, v) for k, v in os.environ.items() if k.startswith(("RUST_", "QUICKCHECK_"))]
    wasi.preopen_dir(".", ".")
    store.set_wasi(wasi)
    module = wasmtime.Module.from_file(engine, program)
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as exit_trap:
        return exit_trap.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
