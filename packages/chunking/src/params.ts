/** Chunking parameters. Part of the protocol: both ends must cut at the same places. */
export interface ChunkParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
}

/** skysync's defaults, the same as the native core's `DEFAULT_PARAMS`. */
export const DEFAULT_PARAMS: Readonly<ChunkParams> = Object.freeze({ minSize: 4096, avgSize: 16384, maxSize: 65536 });

/** Bounds of FastCDC v2020 (fastcdc::v2020::{MINIMUM,AVERAGE,MAXIMUM}_{MIN,MAX}). */
export const PARAM_BOUNDS = Object.freeze({
  minSize: [64, 1_048_576],
  avgSize: [256, 4_194_304],
  maxSize: [1024, 16_777_216],
} as const);

function inRange(v: number, [lo, hi]: readonly [number, number]): boolean {
  return Number.isInteger(v) && v >= lo && v <= hi;
}

export function paramsValid(p: ChunkParams): boolean {
  return (
    inRange(p.minSize, PARAM_BOUNDS.minSize) &&
    inRange(p.avgSize, PARAM_BOUNDS.avgSize) &&
    inRange(p.maxSize, PARAM_BOUNDS.maxSize) &&
    p.minSize <= p.avgSize &&
    p.avgSize <= p.maxSize &&
    // FastCDC starts at min/2*2 and takes its mask from the average rounded to a power of two.
    p.minSize % 2 === 0 &&
    (p.avgSize & (p.avgSize - 1)) === 0
  );
}

/** Throws a RangeError unless the parameters are ones the native core accepts too. */
export function validateParams(p: ChunkParams): void {
  if (!paramsValid(p)) {
    throw new RangeError(
      `invalid chunk parameters min=${p.minSize} avg=${p.avgSize} max=${p.maxSize}: need integers with ` +
        `an even 64<=min<=1MiB, a power-of-two 256<=avg<=4MiB, 1KiB<=max<=16MiB and min<=avg<=max`,
    );
  }
}
