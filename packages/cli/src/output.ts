import type { SyncSummary } from '@skysync/engine';

// Human output: progress on a TTY (stderr), plain lines otherwise, and a closing summary like rsync's --stats.

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** "1 file", "3 files". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

export function summaryLines(s: SyncSummary & { bytesTotal?: number }): string[] {
  const secs = s.durationMs / 1000;
  const speedup = s.bytesTotal && s.bytesWire ? ` (speedup ${(s.bytesTotal / Math.max(1, s.bytesWire)).toFixed(1)}x over sending everything)` : '';
  return [
    `Number of files: ${s.filesScanned}`,
    `Number of files transferred: ${s.filesChanged}`,
    `Number of deleted files: ${s.filesDeleted}`,
    `Literal data: ${formatBytes(s.bytesLiteral)} (${s.bytesLiteral} bytes)`,
    `Reused chunks: ${s.chunksReused}`,
    `Bytes on the wire: ${formatBytes(s.bytesWire)} (${s.bytesWire} bytes)${speedup}`,
    `Transport: ${s.transport}, ${secs.toFixed(3)} s`,
  ];
}
