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

/** A node's error, rewritten when it is a permission error on the remote; as it was otherwise. */
export function explainRemoteError(node: string, message: string): string {
  const denied = deniedPath(message);
  if (!denied) return message;
  return `${node}: permission denied on ${denied}; ${permissionAdvice(node, denied)}`;
}

/** Whether a file that failed to be placed failed for want of permission (the agent's per-file error). */
export function isPermissionFailure(error: string): boolean {
  return /permission denied|os error 13|EACCES|operation not permitted|EPERM|read-only file system|EROFS/i.test(error);
}
