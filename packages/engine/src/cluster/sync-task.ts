// Syncing a task to its nodes: one scan and one chunking pass per source feed them all; each node keeps its own
// state; every source travels over one connection and one agent session per node, in the order given. Nodes
// where the agent cannot run get rsync over ssh instead.

import type { NativeAddon } from '@skysync/chunking';
import { type DeleteMode, trace } from '@skysync/protocol';
import { NoAgentError, SshTarget, type Target } from '@skysync/transport';
import { NodeSessions } from '../node-sessions.js';
import { pushMany } from '../push.js';
import { pushWithRsync } from '../rsync.js';
import type { PushEvent, PushStats } from '../stats.js';
import { type BucketMount, type BucketProgressEvent, type BucketStats, type PreparedBucket, fetchBucketMount, prepareBucketMount } from '../bucket/mount.js';
import type { FileMount } from '@skysync/task';
import type { UploadStats } from '../storage/upload.js';
import { linkMount, mountPlacements, placedAt, type LocalMount, type Placement } from './mounts.js';

export type { LocalMount } from './mounts.js';

/**
 * What a task syncs, in order. A new kind (a bucket) is one more member here, one more case in `TaskSync.sync`,
 * and (for a file mount) one more in `taskSources`.
 */
export type SyncSource =
  | { kind: 'workdir'; source: string; dest: string }
  | { kind: 'local mount'; mount: LocalMount }
  | { kind: 'bucket mount'; mount: BucketMount }
  /** A COPY Storage object with local sources: uploaded by the client, then a bucket mount of its bucket. */
  | { kind: 'storage copy'; mount: StorageCopyMount }
  /** A MOUNT or MOUNT_CACHED Storage object: a FUSE mount of its bucket on every node (../fuse/). */
  | { kind: 'fuse mount'; mount: StorageCopyMount };

export type StorageCopyMount = Extract<FileMount, { kind: 'storage' }>;

export interface MountReport {
  key: string;
  remote: string;
  /** Where the bytes went: the destination itself, or ~/.sky/file_mounts/... linked into place. */
  placedAt: string;
  stats: PushStats;
  /** A bucket mount's own counts (objects listed, fetched, skipped, bytes fetched by the node). */
  bucket?: BucketStats;
  /** A COPY Storage object's upload by the client (on the first node's report only: it happened once). */
  upload?: UploadStats & { bucketCreated: boolean };
  /** A FUSE mount: its mode, its bucket, and whether it was made now or kept from an earlier command. */
  fuse?: { mode: string; source: string; how: string };
}

export interface NodeReport {
  node: string;
  workdir: PushStats | null;
  mounts: MountReport[];
  /** Set when this node could not be synced; the command stops before running anything. */
  error: string | null;
  viaRsync: string | null;
}

export interface SyncRequest {
  nodes: Target[];
  sources: SyncSource[];
  deleteMode: DeleteMode;
  dryRun: boolean;
  native: NativeAddon;
  transport: 'auto' | 'agent' | 'rsync';
  /** false: no head relay (`--no-relay`); undefined: the default (on, unless SKYSYNC_RELAY=0). */
  relay?: boolean;
  onEvent: (e: PushEvent, node: number | undefined, what: string) => void;
  log: (m: string) => void;
}

export async function syncNodes(req: SyncRequest): Promise<NodeReport[]> {
  const sync = new TaskSync(req);
  if (!req.sources.length) return sync.reports;
  await sync.run();
  return sync.reports;
}

class TaskSync {
  readonly reports: NodeReport[];
  private readonly sessions: NodeSessions;
  private readonly viaAgent: boolean;
  /** Where each local mount goes, by node: asked as soon as the node's session is open. */
  private readonly placements: Array<Promise<Map<string, Placement>>>;
  /** Bucket mounts' listings, started at once: they take the store's time, not the nodes'. */
  private readonly listings = new Map<string, Promise<PreparedBucket>>();

  constructor(private readonly req: SyncRequest) {
    this.reports = req.nodes.map((t) => ({ node: t.spec, workdir: null, mounts: [], error: null, viaRsync: null }));
    this.viaAgent = req.transport !== 'rsync';
    this.sessions = new NodeSessions(req.nodes, { onOpenError: (i, e) => this.openFailed(i, e) });
    const mounts = req.sources.flatMap((s) => (s.kind === 'workdir' ? [] : [s.mount]));
    this.placements = req.nodes.map(async (t, i) => ((await this.sessions.settled(i)) && mounts.length ? mountPlacements(t, mounts) : new Map()));
    this.placements.forEach((p) => p.catch(() => {}));
    for (const s of req.sources) {
      if (s.kind !== 'bucket mount') continue;
      const listing = prepareBucketMount(s.mount);
      listing.catch(() => {});
      this.listings.set(s.mount.key, listing);
    }
  }

  async run(): Promise<void> {
    if (!this.viaAgent) {
      for (const r of this.reports) r.viaRsync = '--transport rsync';
      this.sessions.stopOpening();
    }
    // One agent session per node for the whole sync. A workdir pushed first opens them itself, its first
    // operation in their first bytes, and scans while they are made.
    else if (this.req.sources[0]?.kind !== 'workdir') this.sessions.openAll();
    let completed = false;
    try {
      for (const s of this.req.sources) await this.sync(s);
      completed = true;
    } finally {
      // A node whose operations all ran to their end keeps its agent when a warm connection can hold it.
      await this.sessions.finish((i) => completed && !this.reports[i]!.error);
    }
  }

  private sync(s: SyncSource): Promise<void> {
    switch (s.kind) {
      case 'workdir':
        return this.syncWorkdir(s.source, s.dest);
      case 'local mount':
        return this.syncLocalMount(s.mount);
      case 'bucket mount':
        return this.syncBucketMount(s.mount);
      case 'storage copy':
        return this.syncStorageCopy(s.mount);
      case 'fuse mount':
        return this.syncFuseMount(s.mount);
    }
  }

  private openFailed(i: number, e: Error): void {
    const t = this.req.nodes[i]!;
    if (e instanceof NoAgentError && this.req.transport === 'auto' && t instanceof SshTarget) this.reports[i]!.viaRsync = e.message;
    else this.reports[i]!.error = e.message;
  }

  private async syncWorkdir(source: string, dest: string): Promise<void> {
    const { req, reports } = this;
    const done = await this.pushGroups(source, 'workdir', () => dest, this.viaAgent ? req.nodes.map((_, i) => i) : []);
    for (const [i, s] of done) reports[i]!.workdir = s;
    // The rsync fallback, one node at a time as SkyPilot does it.
    for (let i = 0; i < req.nodes.length; i++) {
      const why = reports[i]!.viaRsync;
      if (!why || reports[i]!.error) continue;
      req.log(`${req.nodes[i]!.spec}: using rsync over ssh: ${why}`);
      try {
        reports[i]!.workdir = await this.rsync(i, source, dest);
      } catch (e) {
        reports[i]!.error = (e as Error).message;
      }
    }
  }

  private async syncLocalMount(m: LocalMount): Promise<void> {
    const { req, reports } = this;
    this.sessions.stopOpening();
    await this.sessions.all();
    for (let i = 0; i < req.nodes.length; i++) {
      if (!reports[i]!.viaRsync || reports[i]!.error) continue;
      if (m.sourceType !== 'dir') {
        reports[i]!.error = `${m.key}: a single-file mount needs the skysync agent on ${req.nodes[i]!.spec} (${reports[i]!.viaRsync})`;
        continue;
      }
      try {
        reports[i]!.mounts.push({ key: m.key, remote: m.remote, placedAt: m.remote, stats: await this.rsync(i, m.source, m.remote) });
      } catch (e) {
        reports[i]!.error = `${m.key}: ${(e as Error).message}`;
      }
    }
    const where = await this.placementsOf(m.key);
    const destFor = (i: number): string => placedAt(m.remote, where.get(i));
    const done = await this.pushGroups(m.source, m.key, destFor, await this.live());
    for (const [i, s] of done) reports[i]!.mounts.push({ key: m.key, remote: m.remote, placedAt: destFor(i), stats: s });
    if (req.dryRun) return;
    const linked = [...done.keys()].filter((i) => where.get(i) === 'link');
    await Promise.all(
      linked.map(async (i) => {
        const failed = await linkMount(req.nodes[i]!, m);
        if (failed) reports[i]!.error = failed;
      }),
    );
  }

  /** Where mount `key` goes on each live node; a node whose placement could not be asked gets an error. */
  private async placementsOf(key: string): Promise<Map<number, Placement>> {
    const where = new Map<number, Placement>();
    for (const i of await this.live()) {
      try {
        where.set(i, (await this.placements[i]!).get(key) ?? 'direct');
      } catch (e) {
        this.reports[i]!.error = `${key}: ${(e as Error).message}`;
      }
    }
    return where;
  }

  /** A bucket mount: listed here once, fetched by every node from the store itself, then linked as a local one. */
  private async syncBucketMount(m: BucketMount): Promise<void> {
    const { req, reports } = this;
    this.sessions.stopOpening();
    await this.sessions.all();
    for (const r of reports) if (r.viaRsync && !r.error) r.error = `${m.key}: a bucket mount needs the skysync agent on ${r.node} (${r.viaRsync})`;
    if (!(await this.live()).length) return;
    let prepared: PreparedBucket;
    try {
      prepared = await (this.listings.get(m.key) ?? prepareBucketMount(m));
    } catch (e) {
      for (const i of await this.live()) reports[i]!.error = (e as Error).message;
      return;
    }
    const where = await this.placementsOf(m.key);
    const sessions = await this.sessions.all();
    await Promise.all(
      [...where].map(async ([i, placement]) => {
        const dest = placedAt(m.remote, placement);
        try {
          const onProgress = (e: BucketProgressEvent): void =>
            req.onEvent(
              { type: 'bucket', objectsDone: e.fetched, objectsTotal: e.objectsWanted, bytesDone: e.bytesFetched, bytesTotal: e.bytesWanted, failed: e.failed, settled: e.settled },
              i,
              m.key,
            );
          const r = await fetchBucketMount(sessions[i]!, dest, prepared, req.deleteMode, req.dryRun, onProgress);
          reports[i]!.mounts.push({ key: m.key, remote: m.remote, placedAt: dest, stats: r.stats, bucket: r.bucket });
          if (r.error) reports[i]!.error = `${m.key}: ${r.error}`;
          else if (placement === 'link' && !req.dryRun) reports[i]!.error = await linkMount(req.nodes[i]!, m);
        } catch (e) {
          reports[i]!.error = `${m.key}: ${(e as Error).message}`;
        }
      }),
    );
  }

  /** Uploads the local sources once (what changed since the last upload), then every node fetches the bucket. A
   * dry run uploads nothing and shows what the nodes would fetch from the bucket as it is. */
  private async syncStorageCopy(m: StorageCopyMount): Promise<void> {
    const { req, reports } = this;
    const { uploadStorage } = await import('../storage/copy.js');
    const scheme = m.store === 'gcs' ? 'gs' : 's3';
    let uri = `${scheme}://${m.name ?? ''}`;
    let upload: MountReport['upload'];
    if (!req.dryRun) {
      try {
        const r = await uploadStorage(m, { native: req.native, warn: req.log });
        uri = r.uri;
        upload = r.stats;
        // bench/storage.mjs times the upload part of a push by this line.
        trace(`storage ${m.key} uploaded`);
      } catch (e) {
        for (const r of reports) r.error ??= (e as Error).message;
        return;
      }
    }
    const first = reports.findIndex((r) => !r.error);
    const before = first < 0 ? 0 : reports[first]!.mounts.length;
    await this.syncBucketMount({ kind: 'uri', key: m.key, dest: m.dest, remote: m.remote, uri, scheme });
    const report = first < 0 ? undefined : reports[first]!.mounts[before];
    if (report && upload) report.upload = upload;
  }

  /** Mounts the bucket on every node with rclone (local sources uploaded first, as for COPY). */
  private async syncFuseMount(m: StorageCopyMount): Promise<void> {
    const { req, reports } = this;
    this.sessions.stopOpening();
    await this.sessions.all();
    for (const r of reports) if (r.viaRsync && !r.error) r.error = `${m.key}: a ${m.mode} mount needs the skysync agent on ${r.node} (${r.viaRsync})`;
    const live = await this.live();
    if (!live.length || req.dryRun) return;
    const { parseStoreUri } = await import('@skysync/store');
    const { fuseSpec, mountOnNodes } = await import('../fuse/nodes.js');
    const { bucketForMount } = await import('../storage/copy.js');
    let spec: Awaited<ReturnType<typeof fuseSpec>>;
    let upload: MountReport['upload'];
    try {
      const local = m.sources.filter((src) => !/^[a-z][a-z0-9+.-]*:\/\//i.test(src));
      let uri = m.sources.length && !local.length ? m.sources[0]! : '';
      if (local.length) {
        const { uploadStorage } = await import('../storage/copy.js');
        const r = await uploadStorage(m, { native: req.native, warn: req.log });
        uri = r.uri;
        upload = r.stats;
      } else if (!uri) {
        uri = await bucketForMount(m);
      }
      spec = await fuseSpec({ key: m.key, path: m.remote, uri: parseStoreUri(uri), mode: m.mode as 'MOUNT' | 'MOUNT_CACHED' });
    } catch (e) {
      const message = (e as Error).message;
      for (const i of live) reports[i]!.error ??= message.startsWith(m.key) ? message : `${m.key}: ${message}`;
      return;
    }
    const nodes = live.map((i) => req.nodes[i]!);
    const results = await mountOnNodes(nodes, [spec]);
    results.forEach((r, k) => {
      const i = live[k]!;
      if (r.errors.length) {
        reports[i]!.error = r.errors.join('; ');
        return;
      }
      const how = r.events.find((e) => e.event === 'mounted');
      reports[i]!.mounts.push({
        key: m.key,
        remote: m.remote,
        placedAt: m.remote,
        stats: fuseStats(),
        fuse: { mode: m.mode, source: spec.source, how: how?.event === 'mounted' ? how.how : 'mounted' },
        ...(k === 0 && upload ? { upload } : {}),
      });
    });
  }

  /** Nodes with an open session and no error so far. */
  private async live(): Promise<number[]> {
    const sessions = await this.sessions.all();
    return this.req.nodes.map((_, i) => i).filter((i) => sessions[i] && !this.reports[i]!.error);
  }

  private rsync(i: number, source: string, dest: string): Promise<PushStats> {
    const { req } = this;
    return pushWithRsync({ source, target: req.nodes[i] as SshTarget, dest, deleteMode: req.deleteMode, native: req.native, dryRun: req.dryRun });
  }

  /** Pushes `source` to the nodes `idx`; nodes that agree on the destination share one pushMany (one scan, one
   * chunking pass). A node's failure goes into its report. */
  private async pushGroups(source: string, what: string, destFor: (i: number) => string, idx: number[]): Promise<Map<number, PushStats>> {
    const { req, reports } = this;
    const out = new Map<number, PushStats>();
    const groups = new Map<string, number[]>();
    for (const i of idx) groups.set(destFor(i), [...(groups.get(destFor(i)) ?? []), i]);
    for (const [dest, members] of groups) {
      const results = await pushMany({
        source,
        dest,
        targets: members.map((i) => req.nodes[i]!),
        sessions: this.sessions.subset(members),
        deleteMode: req.deleteMode,
        dryRun: req.dryRun,
        native: req.native,
        relay: req.relay,
        onEvent: (e, n) => req.onEvent(e, n === undefined ? undefined : members[n], what),
      });
      results.forEach((r, k) => {
        const i = members[k]!;
        // A node whose session did not open already has its report (an error, or the rsync fallback).
        if (!(r instanceof Error)) out.set(i, r);
        else if (!reports[i]!.error && !reports[i]!.viaRsync) reports[i]!.error = `${what}: ${r.message}`;
      });
    }
    return out;
  }
}

/** A FUSE mount moves no file itself: its report's push-shaped part is empty. */
function fuseStats(): PushStats {
  return {
    filesScanned: 0,
    filesChanged: 0,
    filesDeleted: 0,
    bytesLiteral: 0,
    bytesWire: 0,
    chunksReused: 0,
    durationMs: 0,
    transport: 'fuse',
    bytesTotal: 0,
    chunksLiteral: 0,
    scanMs: 0,
    generation: null,
    drift: [],
    kept: [],
    failed: [],
    warnings: [],
    dryRun: false,
    scan: 'full',
    scanDirs: 0,
    bytesRelay: 0,
  };
}
