"""A small QR code reader for the page's tests: from a module matrix (no image processing) to
the text, written from ISO/IEC 18004 independently of the vendored encoder, so a test can
check that the QR code the page draws says the link.

It reads versions 1 to 9 in byte mode (a link), any error correction level and mask, and
checks the format information's BCH code; it does not correct errors (the page's symbol has
none), so it reads only the data codewords.
"""

from __future__ import annotations

# Per version 1..9: the codewords of the symbol, and per level the (blocks, ECC codewords per
# block) (ISO/IEC 18004:2015, Table 9). Levels by their format bits: M=0, L=1, H=2, Q=3.
_TOTAL = [0, 26, 44, 70, 100, 134, 172, 196, 242, 292]
_BLOCKS = {
    1: ([1, 1, 1, 1, 1, 2, 2, 2, 2], [7, 10, 15, 20, 26, 18, 20, 24, 30]),  # L
    0: ([1, 1, 1, 2, 2, 4, 4, 4, 5], [10, 16, 26, 18, 24, 16, 18, 22, 22]),  # M
    3: ([1, 1, 2, 2, 4, 4, 6, 6, 8], [13, 22, 18, 26, 18, 24, 18, 22, 20]),  # Q
    2: ([1, 1, 2, 4, 4, 4, 5, 6, 8], [17, 28, 22, 16, 22, 28, 26, 26, 24]),  # H
}
# Alignment pattern centres per version (Annex E).
_ALIGN = [
    [],
    [],
    [6, 18],
    [6, 22],
    [6, 26],
    [6, 30],
    [6, 34],
    [6, 22, 38],
    [6, 24, 42],
    [6, 26, 46],
]
_MASKS = [
    lambda x, y: (x + y) % 2 == 0,
    lambda x, y: y % 2 == 0,
    lambda x, y: x % 3 == 0,
    lambda x, y: (x + y) % 3 == 0,
    lambda x, y: (x // 3 + y // 2) % 2 == 0,
    lambda x, y: x * y % 2 + x * y % 3 == 0,
    lambda x, y: (x * y % 2 + x * y % 3) % 2 == 0,
    lambda x, y: ((x + y) % 2 + x * y % 3) % 2 == 0,
]


def _format(dark: list[list[bool]]) -> tuple[int, int]:
    """(level bits, mask) from the copy of the format information beside the top-left finder."""
    places = [(8, i) for i in range(6)] + [(8, 7), (8, 8), (7, 8)]
    places += [(14 - i, 8) for i in range(9, 15)]  # (x, y), bit 0 first
    bits = sum(dark[y][x] << i for i, (x, y) in enumerate(places)) ^ 0x5412
    data = bits >> 10
    remainder = data << 10
    for i in range(14, 9, -1):  # BCH(15,5) with generator 0x537
        if remainder >> i & 1:
            remainder ^= 0x537 << (i - 10)
    if (data << 10 | remainder) != bits:
        raise ValueError("the format information does not check")
    return data >> 3, data & 7


def _functions(version: int) -> list[list[bool]]:
    """Which modules are not data: finders with separators and format, timing, alignment."""
    size = 17 + 4 * version
    used = [[False] * size for _ in range(size)]

    def mark(x0: int, y0: int, width: int, height: int) -> None:
        for y in range(y0, y0 + height):
            for x in range(x0, x0 + width):
                used[y][x] = True

    mark(0, 0, 9, 9)
    mark(size - 8, 0, 8, 9)
    mark(0, size - 8, 9, 8)  # the dark module (8, size - 8) included
    mark(6, 0, 1, size)
    mark(0, 6, size, 1)
    centres = _ALIGN[version]
    for cy in centres:
        for cx in centres:
            if (cx, cy) in ((6, 6), (6, centres[-1]), (centres[-1], 6)):
                continue
            mark(cx - 2, cy - 2, 5, 5)
    return used


def decode(dark: list[list[bool]]) -> str:
    """The text of a QR code given as rows of modules (True = dark), quiet zone excluded."""
    size = len(dark)
    version = (size - 17) // 4
    if not 1 <= version <= 9 or size != 17 + 4 * version:
        raise ValueError(f"a {size}-module symbol is not version 1..9")
    level, mask = _format(dark)
    used = _functions(version)
    bits: list[int] = []
    right = size - 1
    while right >= 1:
        if right == 6:
            right = 5  # the vertical timing pattern
        upward = (right + 1) & 2 == 0
        for step in range(size):
            y = size - 1 - step if upward else step
            for x in (right, right - 1):
                if not used[y][x]:
                    bits.append(int(dark[y][x] != _MASKS[mask](x, y)))
        right -= 2
    total = _TOTAL[version]
    codewords = [int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, total * 8, 8)]
    blocks, ecc = (table[version - 1] for table in _BLOCKS[level])
    short = total // blocks - ecc  # data codewords of a short block
    longs = total % blocks  # the last blocks hold one more
    data: list[list[int]] = [[] for _ in range(blocks)]
    it = iter(codewords)
    for i in range(short + 1):
        for b in range(blocks):
            if i < short or b >= blocks - longs:
                data[b].append(next(it))
    stream = "".join(f"{byte:08b}" for block in data for byte in block)
    if stream[:4] != "0100":
        raise ValueError(f"mode {stream[:4]} is not byte mode")
    count = int(stream[4:12], 2)
    return bytes(int(stream[12 + 8 * i : 20 + 8 * i], 2) for i in range(count)).decode("utf-8")
