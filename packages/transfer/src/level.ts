// How hard the pump compresses. Level 3 by default: on the benchmark's 100 Mbit/s link the sender of an initial
// push spends the text's share of the time reading and chunking small files, not compressing, so a higher level
// bought nothing there (docs/ARCHITECTURE.md, "Compression level"). `SKYSYNC_COMPRESS_LEVEL` sets another level,
// as rsync's `--compress-level` does: on a slow uplink with a source tree, level 9 sent 13% fewer bytes.
// Above the default, blocks that do not compress (random data, archives, compressed checkpoints) go at the
// fastest level: a higher one would burn CPU for nothing (level 9 takes ~8 ms per MiB of random data, level 1
// ~1). Each switch ends a zstd frame and its window, which at the default would cost more bytes than the ~0.2 ms
// per MiB it saves.

export const LEVEL_DEFAULT = 3;
/** For blocks that did not compress. */
export const LEVEL_INCOMPRESSIBLE = 1;
/** A block that came out larger than this share of its size is taken for incompressible. */
export const INCOMPRESSIBLE_RATIO = 0.97;

/** The level for data that compresses: `SKYSYNC_COMPRESS_LEVEL` or the default. */
export function compressLevel(value = process.env.SKYSYNC_COMPRESS_LEVEL): number {
  if (value === undefined || value === '') return LEVEL_DEFAULT;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 19) {
    throw new Error(`SKYSYNC_COMPRESS_LEVEL=${value}: not a zstd level; set a whole number from 1 to 19, or unset it for ${LEVEL_DEFAULT}`);
  }
  return n;
}

/** The level for a lane's next block, from how its last block compressed (null: no block yet). */
export function levelFor(level: number, lastRatio: number | null): number {
  return level > LEVEL_DEFAULT && lastRatio !== null && lastRatio > INCOMPRESSIBLE_RATIO ? LEVEL_INCOMPRESSIBLE : level;
}
