// Help that fits the terminal and says what else steers a command: the environment variables it reads and
// its exit codes (README.md's table).

import type { Command } from 'commander';

/** The terminal's width for help (80 when stdout is no terminal), never narrower than 40. */
export function helpWidth(columns: number | undefined = process.stdout.columns): number {
  return Math.max(40, columns || 80);
}

/** Every SKYSYNC_ variable the commands read (grep packages/*\/src for process.env.SKYSYNC_). */
const ENV_HELP: Record<string, string> = {
  SKYSYNC_SSH_CONFIG: 'the SSH config to read instead of ~/.ssh/config (as -F)',
  SKYSYNC_CONTROL_PERSIST: 'seconds a warm connection to each node stays after a command (default 300; 0: none)',
  SKYSYNC_WATCH_PERSIST: 'seconds a watch of the source, here and on the nodes, lives idle (default 600; 0: no watching)',
  SKYSYNC_LANES: 'channels for chunk data over one SSH connection, 1 to 16 (default 8)',
  SKYSYNC_COMPRESS_LEVEL: 'zstd level 1 to 19 for data that compresses (default 3)',
  SKYSYNC_RELAY: '0 (off, false, no): every node gets its data from here, as --no-relay',
  SKYSYNC_RELAY_ADDRESSES: "where the workers reach the head's relay, comma-separated",
  SKYSYNC_NODE_URL: 'where a remote downloads Node from, as --node-url',
  SKYSYNC_AGENT_IDLE_TIMEOUT: 'seconds an agent may leave our bytes unread before the command gives up (default 600; 0: never)',
  SKYSYNC_STATE_DIR: "skysync's local state (default ~/.cache/skysync)",
  SKYSYNC_GCS_ENDPOINT: "a GCS-compatible endpoint instead of Google's (AWS_ENDPOINT_URL does it for S3)",
  SKYSYNC_STORE_TIMEOUT: 'seconds a request to S3 or GCS may go without an answer before it is retried or fails (default 60)',
  SKYSYNC_TRACE: "1: each phase's timings on stderr",
};

const CONNECTING = ['SKYSYNC_SSH_CONFIG', 'SKYSYNC_CONTROL_PERSIST', 'SKYSYNC_NODE_URL', 'SKYSYNC_AGENT_IDLE_TIMEOUT'];
const SYNCING = [
  ...CONNECTING,
  'SKYSYNC_WATCH_PERSIST',
  'SKYSYNC_LANES',
  'SKYSYNC_COMPRESS_LEVEL',
  'SKYSYNC_RELAY',
  'SKYSYNC_RELAY_ADDRESSES',
  'SKYSYNC_STATE_DIR',
  'SKYSYNC_GCS_ENDPOINT',
  'SKYSYNC_STORE_TIMEOUT',
  'SKYSYNC_TRACE',
];

/** Which variables each command honours, by its path (`storage ls`). */
const COMMAND_ENV: Record<string, string[]> = {
  push: SYNCING,
  exec: SYNCING,
  launch: SYNCING,
  pull: [...CONNECTING, 'SKYSYNC_LANES', 'SKYSYNC_TRACE'],
  disconnect: ['SKYSYNC_SSH_CONFIG', 'SKYSYNC_CONTROL_PERSIST'],
  jobs: CONNECTING,
  logs: CONNECTING,
  cancel: CONNECTING,
  'storage ls': ['SKYSYNC_STATE_DIR'],
  'storage delete': ['SKYSYNC_STATE_DIR', 'SKYSYNC_GCS_ENDPOINT', 'SKYSYNC_STORE_TIMEOUT'],
};

const EXIT_OK = '0 success';
const EXIT_FAILURE = '1 it failed; the message says what';
const EXIT_USAGE = '2 a bad flag, target or argument';
const EXIT_PARTIAL = '3 partly: some files could not be read or placed (listed); the rest is synced';
const EXIT_INTERRUPTED = '130 Ctrl-C during the sync (run it again: it converges)';
const EXIT_JOB = "N the command's own exit code (the first non-zero across nodes; 130 after Ctrl-C)";

const COMMAND_EXITS: Record<string, string[]> = {
  push: [EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED],
  exec: [EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_JOB],
  launch: [EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_JOB.replace("the command's", "setup's when it fails, else run's")],
  pull: [EXIT_OK, EXIT_FAILURE, EXIT_USAGE, '3 partly: some files could not be read on the remote or written here (listed)', EXIT_INTERRUPTED],
};

/**
 * Lines no wider than `width`: a paragraph (lines starting at column 0) is reflowed; a longer indented line
 * (an example, a table row) continues under its description column.
 */
export function wrapText(text: string, width: number): string {
  const out: string[] = [];
  let paragraph: string[] = [];
  const flush = (): void => {
    if (paragraph.length) out.push(...wrapLine(paragraph.join(' '), width, ''));
    paragraph = [];
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '' || /^\s/.test(line) || /:$/.test(line)) {
      flush();
      out.push(...(line.length > width ? wrapLine(line, width, ' '.repeat(hangingIndent(line))) : [line]));
    } else {
      paragraph.push(line);
    }
  }
  flush();
  return out.join('\n');
}

/** Where an indented line's second column starts (after two or more spaces), else its own indent plus two. */
function hangingIndent(line: string): number {
  const column = /^(\s+\S.*?\s{2,})\S/.exec(line);
  const indent = /^\s*/.exec(line)![0].length;
  const at = column ? column[1]!.length : indent + 2;
  return at > 40 ? indent + 2 : at;
}

function wrapLine(line: string, width: number, indent: string): string[] {
  const lines: string[] = [];
  let rest = line;
  while (rest.length > width) {
    let cut = rest.lastIndexOf(' ', width);
    if (cut <= indent.length) cut = rest.indexOf(' ', width);
    if (cut < 0) break;
    lines.push(rest.slice(0, cut).trimEnd());
    rest = indent + rest.slice(cut + 1).trimStart();
  }
  lines.push(rest);
  return lines;
}

/** Help text added after a command's own, wrapped to the terminal when it is shown. */
export function wrapped(text: string): () => string {
  return () => wrapText(text, helpWidth());
}

function commandPath(c: Command): string {
  const names: string[] = [];
  for (let at: Command | null = c; at?.parent; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

function footer(name: string): string {
  const vars = COMMAND_ENV[name] ?? [];
  const exits = COMMAND_EXITS[name] ?? [EXIT_OK, EXIT_FAILURE, EXIT_USAGE];
  const pad = Math.max(...vars.map((v) => v.length)) + 2;
  return [
    '',
    ...(vars.length ? ['Environment:', ...vars.map((v) => `  ${v.padEnd(pad)}${ENV_HELP[v]}`), ''] : []),
    'Exit codes:',
    ...exits.map((e) => `  ${e.replace(' ', '  ')}`),
  ].join('\n');
}

/** Adds the environment and exit codes to the help of every command below `program` that runs something. */
export function addHelpFooters(program: Command): void {
  for (const c of program.commands) {
    if (c.commands.length) {
      addHelpFooters(c);
      continue;
    }
    c.addHelpText('after', wrapped(footer(commandPath(c))));
  }
}
