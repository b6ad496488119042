// A Server-Sent Events reader over `fetch` (EventSource cannot send the
// admin bearer): the response body's text, split into blocks at blank
// lines; `data:` lines joined into one message, `:` lines are comments.

export type SseItem = { kind: 'data'; data: string } | { kind: 'comment'; text: string };

/** Feed text as it arrives; `take` returns the complete items so far. */
export class SseParser {
  private buf = '';

  push(text: string): SseItem[] {
    this.buf += text.replace(/\r\n?/g, '\n');
    const items: SseItem[] = [];
    let end: number;
    while ((end = this.buf.indexOf('\n\n')) >= 0) {
      const block = this.buf.slice(0, end);
      this.buf = this.buf.slice(end + 2);
      const data: string[] = [];
      let comment: string | undefined;
      for (const line of block.split('\n')) {
        if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        else if (line.startsWith(':')) comment = line.slice(1).trim();
      }
      if (data.length > 0) items.push({ kind: 'data', data: data.join('\n') });
      else if (comment !== undefined) items.push({ kind: 'comment', text: comment });
    }
    return items;
  }
}

/** Why a stream ended. */
export class StreamError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/**
 * Read `url` with the bearer `token` until it ends, is aborted, or stays
 * silent for `silenceMs` (the server comments every 15 s): `onItem` gets
 * each item. Resolves when the server ends the stream; rejects with a
 * `StreamError` (its `status` set for an HTTP refusal).
 */
export async function readStream(
  url: string,
  token: string,
  signal: AbortSignal,
  silenceMs: number,
  onItem: (item: SseItem) => void,
): Promise<void> {
  const res = await fetch(url, {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    cache: 'no-store',
    signal,
  });
  if (!res.ok || !res.body) {
    let message = `${res.status}`;
    try {
      const body = (await res.json()) as { message?: string };
      if (body.message) message = `${res.status}: ${body.message}`;
    } catch {
      // not JSON: the status says enough
    }
    throw new StreamError(message, res.status);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const silence = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StreamError(`no data for ${silenceMs / 1000} s`)), silenceMs);
    });
    try {
      const { done, value } = await Promise.race([reader.read(), silence]);
      if (done) return;
      for (const item of parser.push(value)) onItem(item);
    } catch (e) {
      void reader.cancel().catch(() => {});
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }
}
