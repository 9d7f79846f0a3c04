// Byte progress while data moves: one row per node (and per mount), redrawn in place on a terminal, plain lines
// every few seconds in a log, nothing when quiet.

import { formatBytes } from './output.js';

export type ProgressMode = 'tty' | 'lines' | 'off';

export interface ProgressOutput {
  write(s: string): unknown;
  /** The terminal's width; rows are cut to it so they never wrap (a wrapped row leaves stale lines behind). */
  columns?: number;
}

export interface ProgressOptions {
  /** A redraw on a terminal at most this often. */
  redrawMs?: number;
  /** One line per active row this often when not on a terminal. */
  lineMs?: number;
  now?: () => number;
}

interface Row {
  label: string;
  status: string;
  done: number;
  total: number;
  /** Items beside the bytes (a bucket's objects), when the row counts them. */
  items: { done: number; total: number; noun: string } | null;
  /** The first byte (and item) count, and when: the rates are measured from there. */
  start: { at: number; done: number; items: number } | null;
  /** A log line is written only for a row that moved since the last one. */
  logged: number;
}

/** The mode for stderr: a terminal redraws, a pipe or file gets periodic lines, `-q` or `--json` none. */
export function progressMode(quiet: boolean | undefined, stream: { isTTY?: boolean } = process.stderr): ProgressMode {
  if (quiet) return 'off';
  return stream.isTTY ? 'tty' : 'lines';
}

export function formatDuration(secs: number): string {
  if (!Number.isFinite(secs) || secs < 0) return '--:--';
  const s = Math.round(secs);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** Cut to `width` visible characters (the rows hold no escape sequences), marking the cut. */
export function fitTo(line: string, width: number): string {
  const chars = [...line];
  if (chars.length <= width) return line;
  return width <= 1 ? chars.slice(0, width).join('') : `${chars.slice(0, width - 1).join('')}…`;
}

export class ProgressBoard {
  private readonly rows = new Map<string, Row>();
  /** Lines of the board on the screen now (the cursor is at the end of the last one). */
  private drawn = 0;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private lastLog: number;
  private readonly redrawMs: number;
  private readonly lineMs: number;
  private readonly now: () => number;

  constructor(
    private readonly out: ProgressOutput,
    private readonly mode: ProgressMode,
    opts: ProgressOptions = {},
  ) {
    this.redrawMs = opts.redrawMs ?? 100;
    this.lineMs = opts.lineMs ?? 2000;
    this.now = opts.now ?? Date.now;
    this.lastLog = this.now();
  }

  /** A phase without byte counts yet ("scanning", "planning"). */
  status(key: string, label: string, text: string): void {
    this.row(key, label).status = text;
    this.tick();
  }

  /** Byte progress; `items`: a count shown beside it ("12 / 3004 objects"). */
  bytes(key: string, label: string, done: number, total: number, items?: { done: number; total: number; noun: string }): void {
    const r = this.row(key, label);
    const now = this.now();
    r.start ??= { at: now, done, items: items?.done ?? 0 };
    r.done = done;
    r.total = Math.max(total, done);
    r.status = '';
    if (items) r.items = items;
    this.tick();
  }

  /** A line said while the board is up: the board makes room for it and comes back below it. */
  note(line: string): void {
    const shown = this.drawn;
    this.erase();
    this.out.write(line + '\n');
    if (shown) this.draw();
  }

  /** Takes the board off the screen, leaving nothing behind. */
  finish(): void {
    this.erase();
  }

  /** The row's text as drawn (without cutting). */
  describe(r: Row): string {
    if (r.status || (r.total === 0 && r.done === 0)) return `${r.label}  ${r.status || 'waiting for data'}`;
    const pct = r.total ? Math.min(100, Math.floor((r.done / r.total) * 100)) : 100;
    const secs = r.start ? (this.now() - r.start.at) / 1000 : 0;
    const rate = secs > 0.2 ? (r.done - r.start!.done) / secs : 0;
    // Many small items (a bucket's objects) take longer than their bytes say: the slower of the two estimates.
    const itemRate = r.items && secs > 0.2 ? (r.items.done - r.start!.items) / secs : 0;
    const left = Math.max(rate > 0 ? (r.total - r.done) / rate : 0, itemRate > 0 ? (r.items!.total - r.items!.done) / itemRate : 0);
    const eta = rate > 0 ? formatDuration(left) : '--:--';
    const rateText = rate > 0 ? `${formatBytes(rate)}/s` : '-';
    const items = r.items ? `  ${r.items.done} / ${r.items.total} ${r.items.noun}` : '';
    return `${r.label}  ${formatBytes(r.done)} / ${formatBytes(r.total)}  ${String(pct).padStart(3)}%  ${rateText}  ETA ${eta}${items}`;
  }

  private row(key: string, label: string): Row {
    let r = this.rows.get(key);
    if (!r) {
      r = { label, status: '', done: 0, total: 0, items: null, start: null, logged: -1 };
      this.rows.set(key, r);
    }
    return r;
  }

  private tick(): void {
    const now = this.now();
    if (this.mode === 'tty') {
      if (now - this.lastDraw >= this.redrawMs) this.draw();
    } else if (this.mode === 'lines' && now - this.lastLog >= this.lineMs) {
      this.lastLog = now;
      for (const r of this.rows.values()) {
        if (r.start === null || r.logged === r.done) continue;
        r.logged = r.done;
        this.out.write(this.describe(r) + '\n');
      }
    }
  }

  private draw(): void {
    if (this.mode !== 'tty') return;
    this.lastDraw = this.now();
    // One column short of the width: some terminals wrap when the last column is written.
    const width = Math.max(20, (this.out.columns ?? 80) - 1);
    const lines = [...this.rows.values()].map((r) => fitTo(this.describe(r), width));
    this.out.write(this.home() + lines.join('\n'));
    this.drawn = lines.length;
  }

  private erase(): void {
    if (this.mode === 'tty' && this.drawn) this.out.write(this.home());
    this.drawn = 0;
  }

  /** To the board's first line, clearing it and everything below. */
  private home(): string {
    return `\r${this.drawn > 1 ? `\x1b[${this.drawn - 1}A` : ''}\x1b[J`;
  }
}

let active: ProgressBoard | null = null;

/** The board now on stderr, if any: lines printed meanwhile go above it. */
export function showBoard(board: ProgressBoard | null): void {
  active = board;
}

/** Prints a line on stderr, above the progress board when one is up. */
export function printLine(line: string): void {
  if (active) active.note(line);
  else process.stderr.write(line + '\n');
}

/** A board on stderr, in the mode stderr and the flags ask for. */
export function stderrBoard(quiet: boolean | undefined): ProgressBoard {
  const err = process.stderr;
  const out: ProgressOutput = {
    write: (s) => err.write(s),
    get columns() {
      return err.columns;
    },
  };
  return new ProgressBoard(out, progressMode(quiet, err));
}
