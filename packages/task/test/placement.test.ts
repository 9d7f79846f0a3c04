import { describe, expect, it } from 'vitest';
import { parseTask, placement } from '../src/index.js';

describe('placement', () => {
  it.each([
    ['~', 'home'],
    ['~/x', 'home'],
    ['~/sky_workdir/data', 'home'],
    ['~/a/../b', 'home'],
    ['~/../etc', 'elsewhere'],
    ['/tmp', 'tmp'],
    ['/tmp/x/y', 'tmp'],
    ['/tmp/../etc', 'elsewhere'],
    ['/tmpfoo', 'elsewhere'],
    ['/data', 'elsewhere'],
    ['/', 'elsewhere'],
    ['/home/user/x', 'elsewhere'],
  ] as const)('%s -> %s', (remote, expected) => {
    expect(placement(remote)).toBe(expected);
  });
});

describe('remote path of a destination', () => {
  const remotes = (dests: string[]): string[] => {
    const yaml = `file_mounts:\n${dests.map((d) => `  ${JSON.stringify(d)}: s3://bucket/key`).join('\n')}\n`;
    return parseTask(yaml, 't.yaml').fileMounts.map((m) => m.remote);
  };

  it('relative goes under ~/sky_workdir, ~ and absolute stay as written', () => {
    expect(remotes(['data', './data/x', 'a/../b', '~', '~/x', '/tmp/x', '/abs/x', '~user/x'])).toEqual([
      '~/sky_workdir/data',
      '~/sky_workdir/data/x',
      '~/sky_workdir/b',
      '~',
      '~/x',
      '/tmp/x',
      '/abs/x',
      '~/sky_workdir/~user/x',
    ]);
  });

  it('every remote maps to a placement', () => {
    expect(remotes(['data', '/tmp/x', '/opt/x']).map(placement)).toEqual(['home', 'tmp', 'elsewhere']);
  });
});
