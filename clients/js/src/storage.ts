import type { SeqStorage } from './options.js';

/**
 * A `storage` option backed by Web Storage (`localStorage` by default),
 * for browsers and Electron renderers: a reloaded page resumes where it was.
 * Use one key per user.
 */
export function webStorage(key: string, store?: Storage): SeqStorage {
  const s = () => store ?? globalThis.localStorage;
  return {
    get() {
      const v = Number(s().getItem(key));
      return Number.isFinite(v) && v > 0 ? v : undefined;
    },
    set(seq) {
      s().setItem(key, String(seq));
    },
  };
}
