# The compiled module's interface (exporter/native/_speedups.c documents each function).

def scan_records(text: str, delimiter: str, limit: int, final: bool, /) -> bytes | None: ...
def map_plain(
    text: str,
    offsets: bytes,
    delimiter: str,
    spec: tuple[int, int, int, tuple[int, ...], tuple[bool, ...], tuple[str, ...], int, str],
    /,
) -> tuple[list[int], list[str], list[bytes], bytes, list[str | None] | None]: ...
def blake2b64(items: list[bytes], /) -> bytes: ...
