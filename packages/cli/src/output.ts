import type { BucketStats, SyncSummary } from '@skysync/engine';

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

/** What a summary needs beyond the totals every sync reports (a push has all of it, a pull some). */
export type Summarized = SyncSummary & { bytesTotal?: number; dryRun?: boolean; failed?: Array<{ path: string }> };

/** Files written, not counting those that failed (the plan counted them as changed). */
export function filesWritten(s: Summarized): number {
  return Math.max(0, s.filesChanged - (s.dryRun ? 0 : (s.failed?.length ?? 0)));
}

/**
 * "12.3x" (over sending everything), only where it says something: some content was found on the remote
 * and reused. A first push (nothing reused) or a push that changed nothing has no speedup worth a number.
 */
export function speedup(s: Summarized & { bytesRelay?: number }): string | null {
  // A relayed node's data came from the head: what it saved is said as "from the head".
  if (s.bytesRelay) return null;
  if (s.dryRun || !s.bytesTotal || !s.bytesWire || s.filesChanged === 0 || s.chunksReused === 0) return null;
  const ratio = s.bytesTotal / s.bytesWire;
  if (ratio < 1.5) return null;
  return `${ratio < 100 ? ratio.toFixed(1) : ratio.toFixed(0)}x`;
}

export function summaryLines(s: Summarized): string[] {
  const secs = s.durationMs / 1000;
  const dry = !!s.dryRun;
  const failed = dry ? 0 : (s.failed?.length ?? 0);
  const gain = speedup(s);
  return [
    ...(dry ? ['Dry run: nothing was changed.'] : []),
    `Number of files: ${s.filesScanned}`,
    `Number of files ${dry ? 'that would be transferred' : 'transferred'}: ${filesWritten(s)}`,
    ...(failed ? [`Number of files failed: ${failed}`] : []),
    `Number of ${dry ? 'files that would be deleted' : 'deleted files'}: ${s.filesDeleted}`,
    `Literal data: ${formatBytes(s.bytesLiteral)} (${s.bytesLiteral} bytes)`,
    `Reused chunks: ${s.chunksReused}`,
    `Bytes on the wire: ${formatBytes(s.bytesWire)} (${s.bytesWire} bytes)`,
    ...(gain ? [`Speedup: ${gain} over sending everything`] : []),
    `Transport: ${s.transport}, ${secs.toFixed(3)} s`,
  ];
}

/** One line for a node's workdir or mount (a cluster, or a command that runs jobs after). */
export function compactLine(label: string, s: Summarized & { bytesRelay?: number }): string {
  const failed = s.dryRun ? 0 : (s.failed?.length ?? 0);
  const relayed = s.bytesRelay ? `, ${formatBytes(s.bytesRelay)} from the head` : '';
  const gain = speedup(s);
  const changed = `${plural(filesWritten(s), 'file')} ${s.dryRun ? 'would change' : 'changed'}`;
  return (
    `${label}: ${s.dryRun ? 'dry run, ' : ''}${changed}${failed ? `, ${failed} failed` : ''}, ${s.filesDeleted} deleted, ` +
    `${formatBytes(s.bytesLiteral)} literal${relayed}, ${formatBytes(s.bytesWire)} on the wire${gain ? ` (${gain} speedup)` : ''} ` +
    `(${s.transport}, ${secs(s)} s)`
  );
}

function secs(s: SyncSummary): string {
  return (s.durationMs / 1000).toFixed(2);
}

/** One line for a bucket mount on a node: what the node fetched from the store itself (nothing crossed this link). */
export function bucketLine(label: string, s: Summarized, b: BucketStats): string {
  const dry = !!s.dryRun;
  const extra = [b.failed && !dry ? `${b.failed} failed` : '', b.refused ? `${b.refused} refused` : '', b.stale ? `${b.stale} left (--no-delete)` : ''].filter(Boolean);
  return (
    `${label}: ${dry ? 'dry run, ' : ''}${plural(b.objectsListed, 'object')} listed, ${b.fetched} ${dry ? 'would be fetched' : 'fetched'} ` +
    `(${formatBytes(b.bytesFetched)} from ${b.source}), ${b.skipped} unchanged, ${b.deleted} deleted${extra.length ? `, ${extra.join(', ')}` : ''} (${secs(s)} s)`
  );
}
