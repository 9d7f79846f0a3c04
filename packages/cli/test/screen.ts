// A small terminal for tests: feeds what a program wrote to a terminal of `columns` and tells what is on the
// screen at the end. It knows what the CLI writes (text, CR, LF, cursor up, erase line/below) and wraps as a
// terminal does, so a row too wide for it shows up as an extra line.

export interface Screen {
  lines: string[];
  /** The longest line seen written between two line ends (before wrapping). */
  widest: number;
}

export function renderScreen(raw: string, columns: number): Screen {
  const lines: string[][] = [[]];
  let row = 0;
  let col = 0;
  let run = 0;
  let widest = 0;
  const line = (r: number): string[] => (lines[r] ??= []);
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch === '\x1b' && raw[i + 1] === '[') {
      const m = /^\x1b\[(\d*)([A-Za-z])/.exec(raw.slice(i));
      if (!m) continue;
      i += m[0].length - 1;
      const n = m[1] ? Number(m[1]) : 0;
      if (m[2] === 'A') row = Math.max(0, row - Math.max(1, n));
      else if (m[2] === 'K' && n === 2) lines[row] = [];
      else if (m[2] === 'K') line(row).length = Math.min(line(row).length, col);
      else if (m[2] === 'J') {
        line(row).length = Math.min(line(row).length, col);
        lines.length = row + 1;
      }
      continue;
    }
    if (ch === '\r') {
      col = 0;
      run = 0;
    } else if (ch === '\n') {
      row++;
      col = 0;
      run = 0;
      line(row);
    } else {
      if (col >= columns) {
        row++;
        col = 0;
        line(row);
      }
      line(row)[col++] = ch;
      widest = Math.max(widest, ++run);
    }
  }
  const text = lines.map((l) =>
    Array.from(l, (c) => c ?? ' ')
      .join('')
      .trimEnd(),
  );
  while (text.length && text[text.length - 1] === '') text.pop();
  return { lines: text, widest };
}
