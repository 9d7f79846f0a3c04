// Little helpers for the binary parts of the wire format and the agent's manifest: LEB128 varints, zigzag for
// signed values, length-prefixed byte strings. Paths travel as raw bytes; in JavaScript they are latin1 strings
// (one char per byte) so that names which are not UTF-8 survive unchanged.

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export class ByteWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initial = 4096) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  get length(): number {
    return this.pos;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v;
    return this;
  }

  varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new ProtocolError(`varint out of range: ${v}`);
    this.ensure(10);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
    return this;
  }

  /** Signed integers (mtimes before 1970 exist). */
  zigzag(v: number): this {
    return this.varint(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** A length-prefixed byte string. */
  blob(b: Uint8Array): this {
    return this.varint(b.length).bytes(b);
  }

  /** A length-prefixed latin1 string (a path). */
  path(p: string): this {
    this.varint(p.length);
    this.ensure(p.length);
    this.pos += this.buf.write(p, this.pos, 'latin1');
    return this;
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export class ByteReader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private need(n: number): void {
    if (n > this.remaining) throw new ProtocolError('truncated message');
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(v)) throw new ProtocolError('varint out of range');
        return v;
      }
      mul *= 0x80;
    }
    throw new ProtocolError('varint too long');
  }

  zigzag(): number {
    const v = this.varint();
    return v % 2 === 0 ? v / 2 : -(v + 1) / 2;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  blob(): Buffer {
    return this.bytes(this.varint());
  }

  path(): string {
    const n = this.varint();
    this.need(n);
    const s = this.buf.toString('latin1', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  end(): void {
    if (this.remaining !== 0) throw new ProtocolError(`${this.remaining} unexpected trailing bytes`);
  }
}

/** Converts a latin1 byte-string path for display (UTF-8 where it is UTF-8). */
export function displayPath(p: string): string {
  return Buffer.from(p, 'latin1').toString('utf8');
}

/** Converts a user-supplied (UTF-8) path into the byte-string form used internally. */
export function bytePath(p: string): string {
  return Buffer.from(p, 'utf8').toString('latin1');
}
