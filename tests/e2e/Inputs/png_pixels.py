"""Reads an 8-bit RGB PNG (no interlace), as stb_image_write writes them,
with nothing but the standard library, and prints its size and how many
pixels of each region are close to each colour asked for.

usage: png_pixels.py FILE REGION:COLOUR...
REGION is x0,y0,x1,y1 (pixels, end exclusive); COLOUR is rrggbb. Prints
"size W H", then "x0,y0,x1,y1:rrggbb N" for each request.
"""
import struct
import sys
import zlib


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            sys.exit(f"{path}: bad CRC in {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if (depth, colour, interlace) != (8, 2, 0):
        sys.exit(f"{path}: not 8-bit RGB without interlace")
    raw, stride = zlib.decompress(idat), width * 3
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append(line)
        prev = line
    return width, height, rows


def main():
    width, height, rows = read_png(sys.argv[1])
    print("size", width, height)
    for request in sys.argv[2:]:
        region, colour = request.split(":")
        x0, y0, x1, y1 = map(int, region.split(","))
        want = [int(colour[i:i + 2], 16) for i in (0, 2, 4)]
        count = 0
        for y in range(y0, min(y1, height)):
            for x in range(x0, min(x1, width)):
                pixel = rows[y][3 * x:3 * x + 3]
                count += all(abs(p - w) <= 24 for p, w in zip(pixel, want))
        print(f"{request} {count}")


main()
