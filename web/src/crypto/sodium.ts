/**
 * libsodium, loaded once. Why a module: the WebAssembly build is large, so it
 * is a separate chunk fetched by dynamic import; every other crypto module
 * calls `na()` after `loadSodium()` has resolved (the app awaits it at start).
 */
import type sodiumType from "libsodium-wrappers-sumo";

export type Sodium = typeof sodiumType;
let lib: Sodium | null = null;

export async function loadSodium(): Promise<Sodium> {
  if (lib === null) {
    const mod = await import("libsodium-wrappers-sumo");
    await mod.default.ready;
    lib = mod.default;
  }
  return lib;
}

export function na(): Sodium {
  if (lib === null) throw new Error("libsodium not loaded");
  return lib;
}
