/**
 * One WebSocket connection to the node speaking gchat.v1+msgpack (PROTOCOL.md
 * §1-§5): the first frame is the challenge; requests carry a rid and their
 * replies are matched by it; everything else the server pushes goes to
 * `onPush` (held until it is set). The URL is always the page's own origin
 * (the app talks to no other host).
 */
import { decode, encode } from "@msgpack/msgpack";

export type Frame = Record<string, unknown> & { type: string };

export class ServerError extends Error {
  constructor(readonly frame: Frame) {
    super(String(frame["message"] ?? frame["code"]));
  }
  get code(): string {
    return String(this.frame["code"]);
  }
}

export class Wire {
  private nextRid = 1;
  private readonly pending = new Map<number, { resolve: (f: Frame) => void; reject: (e: Error) => void }>();
  /** Pushes that came before `onPush` was set: the node pushes the inbox as
   * soon as it answers `auth`, while the app may still be making requests. */
  private held: Frame[] = [];
  private pushHandler: ((frame: Frame) => void) | null = null;
  onClose: (code: number, reason: string) => void = () => undefined;

  private constructor(private readonly ws: WebSocket, readonly challenge: { serverId: string; nonce: Uint8Array }) {
    ws.onmessage = (e) => this.receive(e.data as ArrayBuffer);
    ws.onclose = (e) => {
      for (const p of this.pending.values()) p.reject(new Error("connection closed"));
      this.pending.clear();
      this.onClose(e.code, e.reason);
    };
  }

  static connect(url: string, timeoutMs = 10_000): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, ["gchat.v1+msgpack"]);
      ws.binaryType = "arraybuffer";
      const timer = setTimeout(() => { ws.close(); reject(new Error("connect timeout")); }, timeoutMs);
      ws.onerror = () => { clearTimeout(timer); reject(new Error("connection failed")); };
      ws.onclose = (e) => { clearTimeout(timer); reject(Object.assign(new Error("closed"), { code: e.code })); };
      ws.onmessage = (e) => {
        clearTimeout(timer);
        const first = decode(new Uint8Array(e.data as ArrayBuffer)) as Frame;
        if (first.type !== "challenge") { ws.close(1002); reject(new Error("expected a challenge")); return; }
        resolve(new Wire(ws, { serverId: String(first["server_id"]), nonce: first["nonce"] as Uint8Array }));
      };
    });
  }

  private receive(data: ArrayBuffer): void {
    const frame = decode(new Uint8Array(data)) as Frame;
    const rid = frame["rid"];
    if (typeof rid === "number" && this.pending.has(rid)) {
      const p = this.pending.get(rid)!;
      this.pending.delete(rid);
      if (frame.type === "error") p.reject(new ServerError(frame));
      else p.resolve(frame);
      return;
    }
    if (this.pushHandler === null) this.held.push(frame);
    else this.pushHandler(frame);
  }

  /** Where pushed frames go; those held until now go first, in order. */
  set onPush(handler: (frame: Frame) => void) {
    this.pushHandler = handler;
    const held = this.held;
    this.held = [];
    for (const frame of held) handler(frame);
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(frame: Frame): void {
    this.ws.send(encode(frame, { ignoreUndefined: true }));
  }

  request(frame: Frame, timeoutMs = 30_000): Promise<Frame> {
    const rid = this.nextRid++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(rid); reject(new Error("request timeout")); }, timeoutMs);
      this.pending.set(rid, {
        resolve: (f) => { clearTimeout(timer); resolve(f); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      try {
        this.send({ ...frame, rid });
      } catch (e) {
        this.pending.delete(rid);
        clearTimeout(timer);
        reject(e as Error);
      }
    });
  }

  close(code = 1000): void {
    this.ws.close(code);
  }
}

export const nodeUrl = (): string => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
