import { main } from './main.js';

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`skysync-agent: ${e.message}\n`);
  process.exitCode = 1;
});
