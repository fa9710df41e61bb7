/** Safety numbers (§E8): 60 digits both officials compute alike from the certified keys. */
import { compareBytes, concat, uuidBytes } from "./bytes";
import { InvalidKey } from "./errors";
import { sha512 } from "./primitives";

export function fingerprintDigits(officialId: string, identityKeys: Uint8Array[]): string {
  if (identityKeys.length === 0 || identityKeys.some((k) => k.length !== 32)) throw new InvalidKey("identity keys");
  const keys = concat(...[...identityKeys].sort(compareBytes));
  let h = sha512(concat(new Uint8Array([0, 0]), uuidBytes(officialId), keys));
  for (let i = 0; i < 5200; i++) h = sha512(concat(h, keys));
  let out = "";
  for (let k = 0; k < 30; k += 5) {
    let v = 0;
    for (let j = 0; j < 5; j++) v = v * 256 + h[k + j]!;
    out += String(v % 100000).padStart(5, "0");
  }
  return out;
}

export function safetyNumber(localOfficial: string, localKeys: Uint8Array[], remoteOfficial: string, remoteKeys: Uint8Array[]): string {
  const a = fingerprintDigits(localOfficial, localKeys);
  const b = fingerprintDigits(remoteOfficial, remoteKeys);
  return a <= b ? a + b : b + a;
}

export const formatSafetyNumber = (digits: string): string => (digits.match(/.{1,5}/g) ?? []).join(" ");
