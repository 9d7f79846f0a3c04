// `skysync storage ls` and `skysync storage delete NAME`: the buckets skysync created for Storage objects with a
// local source. Only those are ever deleted; any other bucket is refused in one line.

import type { Command } from 'commander';
import { StorageError, deleteCreatedBucket, listCreatedBuckets } from '@skysync/engine';
import { EXIT } from './exit-codes.js';
import { wrapped } from './help.js';

function print(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function addStorage(program: Command): void {
  const storage = program.command('storage').description('buckets skysync created for Storage objects (name + local source)');
  storage
    .command('ls')
    .description("list the buckets skysync created (from this machine's record)")
    .option('--json', 'print them as one JSON array (stdout)')
    .action(async (flags: { json?: boolean }) => {
      const buckets = await listCreatedBuckets();
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(buckets)}\n`);
        return;
      }
      if (buckets.length === 0) print('no buckets created by skysync');
      for (const b of buckets) {
        process.stdout.write(`${b.uri}\t${b.persistent ? 'persistent' : 'not persistent'}\tcreated ${b.createdAt}\t${b.sources.join(',')}\n`);
      }
    });
  storage
    .command('delete')
    .description('delete a bucket skysync created, with everything in it (refuses any other bucket)')
    .argument('<name>', 'the bucket: NAME, s3://NAME or gs://NAME')
    .addHelpText(
      'after',
      wrapped(`
Examples:
  skysync storage ls
  skysync storage delete my-dataset`),
    )
    .action(async (name: string) => {
      try {
        const result = await deleteCreatedBucket(name);
        print(result.alreadyGone ? `${result.uri}: already gone; forgotten` : `${result.uri}: deleted (${result.objectsDeleted} objects)`);
      } catch (error) {
        if (!(error instanceof StorageError)) throw error;
        print(`skysync: ${error.message}`);
        process.exitCode = EXIT.failure;
      }
    });
}
