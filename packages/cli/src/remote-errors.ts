// A remote's "permission denied" said once, for a person: which path, on which node, and what to do, instead of
// the errno text the agent, the shell and the client each wrapped around it.

/** Where each layer puts the path it was refused: Node's errno text, the shell's mkdir, anything `'PATH': ...`. */
const DENIED = [
  /\b(?:EACCES: permission denied|EPERM: operation not permitted|EROFS: read-only file system), \w+ '([^']+)'/,
  /cannot create directory '([^']+)': (?:Permission denied|Read-only file system|Operation not permitted)/,
  /'([^']+)': (?:Permission denied|Read-only file system|Operation not permitted)/,
];

/** The path a remote error says it was refused, or null when it is no permission error. */
export function deniedPath(message: string): string | null {
  for (const re of DENIED) {
    const m = re.exec(message);
    if (m) return m[1]!;
  }
  return null;
}

/** What to do about a path the SSH user may not write on `node`. */
export function permissionAdvice(node: string, denied: string): string {
  const state = /^(.*\/\.skysync)(\/|$)/.exec(denied);
  if (state) {
    return `skysync keeps its agent and state in ${state[1]}: make it the SSH user's, e.g. ssh ${node} 'sudo chown -R "$(id -un)" ${state[1]}'`;
  }
  const fix = `make it writable, e.g. ssh ${node} 'sudo mkdir -p ${denied} && sudo chown "$(id -un)" ${denied}'`;
  if (denied.startsWith('~')) return `the SSH user may not write there: ${fix}`;
  return `the SSH user may not write there: push under its home instead (e.g. --dest '~/x'), or ${fix}`;
}

/** Why the remote refused, in the kernel's own words: a read-only filesystem is not a matter of permissions, and
 * its fix is another. Null when the error is no refusal. */
export function refusalReason(error: string): 'permission denied' | 'operation not permitted' | 'read-only file system' | null {
  if (/read-only file system|EROFS|os error 30/i.test(error)) return 'read-only file system';
  if (/operation not permitted|EPERM|os error 1\b/i.test(error)) return 'operation not permitted';
  if (/permission denied|EACCES|os error 13/i.test(error)) return 'permission denied';
  return null;
}

/**
 * Why a file did not fit on the remote: the filesystem is full, or the user's quota is. Every file of a push fails
 * the same way then, so this is said once for the push, not per file. Null when the error is something else.
 */
export function roomReason(error: string): 'no space left on device' | 'disk quota exceeded' | null {
  if (/no space left on device|ENOSPC|os error 28\b/i.test(error)) return 'no space left on device';
  if (/disk quota exceeded|EDQUOT|os error 122\b/i.test(error)) return 'disk quota exceeded';
  return null;
}

/** What to do when `at` on `node` has no room left. */
export function roomAdvice(node: string, at: string, reason: NonNullable<ReturnType<typeof roomReason>>): string {
  const onNode = (cmd: string): string => (node.startsWith('local:') ? cmd : `ssh ${node} ${cmd}`);
  const room = reason === 'disk quota exceeded' ? `free space within your quota (${onNode('quota -s')}) or have it raised` : `free space there (${onNode(`df -h ${at}`)})`;
  return `${room} or push elsewhere (--dest '~/x'), then push again; --verbose lists the files`;
}

/** What to do about a refusal of `reason` at `denied` on `node`. */
export function refusalAdvice(node: string, denied: string, reason: NonNullable<ReturnType<typeof refusalReason>>): string {
  if (reason === 'read-only file system') return `the filesystem there is mounted read-only: push elsewhere (--dest '~/x') or remount it writable on ${node}`;
  return permissionAdvice(node, denied);
}

/** A node's error, rewritten when it is a refusal on the remote; as it was otherwise. */
export function explainRemoteError(node: string, message: string): string {
  const denied = deniedPath(message);
  const reason = refusalReason(message);
  if (!denied || !reason) return message;
  return `${node}: ${reason} on ${denied}; ${refusalAdvice(node, denied, reason)}`;
}

/** Whether a file that failed to be placed was refused by the remote (the agent's per-file error). */
export function isPermissionFailure(error: string): boolean {
  return refusalReason(error) !== null;
}
