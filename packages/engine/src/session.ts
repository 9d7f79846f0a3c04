// Opening a protocol session with an agent: magic, hello both ways, version check.

import { Connection, Frame, type Begin, type Compression, type FrameMessage, type Hello, checkHello, makeHello, ProtocolError, remoteError } from '@skysync/protocol';
import type { AgentChannel, Target } from '@skysync/transport';

export const CLIENT_VERSION = '0.1.0';

export interface Session {
  conn: Connection;
  channel: AgentChannel;
  /** Resolves with the agent's hello (the client's own goes out at once, without waiting). */
  agentHello: Promise<Hello>;
  close(): Promise<void>;
  /** Ends the session after a completed operation, keeping the agent for a later command when the transport can. */
  release(): Promise<void>;
}

/**
 * Opens a session. `begin`, when given, goes out with the hello, before the agent has even started: the agent
 * finds its first operation waiting (no round trip to wait for its hello first).
 */
export async function openSession(target: Target, compression: Compression[], begin?: Begin): Promise<Session> {
  const hello = makeHello({ role: 'client', software: CLIENT_VERSION, compression, native: true });
  const prelude = Connection.prelude([[Frame.Hello, hello], ...(begin ? [[Frame.Begin, begin] as [number, unknown]] : [])]);
  const channel = await target.openAgent(prelude);
  const conn = new Connection(channel.input, channel.output, undefined, prelude);
  const agentHello = conn
    .expect(Frame.Hello)
    .then((f) => checkHello(f.payload, 'agent', `the agent on ${target.spec}`))
    .catch(async (e: Error) => {
      // Say what the remote printed instead of a bare protocol error.
      const said = (channel.stderr() + conn.preamble).trim().split('\n').slice(-3).join(' | ');
      throw new ProtocolError(`no skysync agent answered on ${target.spec}: ${e.message}${said ? ` (remote said: ${said})` : ''}`);
    });
  agentHello.catch(() => {});
  // SKYSYNC_TRACE: the agent's own milestones (its stderr) once the session ends.
  const traceAgent = (): void => {
    if (process.env.SKYSYNC_TRACE) process.stderr.write(channel.stderr());
  };
  return {
    conn,
    channel,
    agentHello,
    close: async () => {
      conn.end();
      await channel.close();
      traceAgent();
    },
    release: async () => {
      if (!channel.release) {
        conn.end();
        if (channel.detach) channel.detach();
        else await channel.close();
        traceAgent();
        return;
      }
      await conn.send(Frame.End, Buffer.alloc(0));
      await channel.release();
      traceAgent();
    },
  };
}

/** The next frame, whatever its type; the agent's error frame, or its early exit, as a readable error. */
export async function nextFrame(s: Session, what: string): Promise<FrameMessage> {
  try {
    const f = await s.conn.next();
    if (!f) throw new ProtocolError('connection closed');
    if (f.type === Frame.Error) throw remoteError(f.payload);
    return f;
  } catch (e) {
    throw agentFailure(s, what, e as Error);
  }
}

function agentFailure(s: Session, what: string, e: Error): ProtocolError {
  const said = s.channel.stderr().trim().split('\n').slice(-3).join(' | ');
  const msg = e.message;
  return new ProtocolError(`${what}: ${msg}${said && !msg.includes(said) ? ` (agent said: ${said})` : ''}`);
}

/** Waits for the next frame of `type`, turning an early exit of the agent into a readable error. */
export async function expectFrame(s: Session, type: number, what: string, onNotice?: (payload: Buffer) => void) {
  try {
    return await s.conn.expect(type, onNotice);
  } catch (e) {
    throw agentFailure(s, what, e as Error);
  }
}
