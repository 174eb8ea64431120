"""Benchmarks, in one place: ``python -m avemo.bench [--only SECTION] [-o FILE]`` (``make bench``).

Each module measures one thing on real data (or generated data of the real sizes) and writes a
section of a dated markdown table (``bench.table``). Some modules also hold the generated
inputs that tests share (``bench.subject``) or read recorded results back (``bench.crops``).
"""
