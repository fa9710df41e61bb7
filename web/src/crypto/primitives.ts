/**
 * The primitives of PROTOCOL.md Part II §E1, on libsodium. All synchronous:
 * HMAC/HKDF use libsodium's HMAC-SHA256 (every key here is 32 bytes), so the
 * ratchet can run without awaiting WebCrypto between steps.
 */
import { concat, utf8 } from "./bytes";
import { DecryptionFailed, InvalidKey, InvalidSignature } from "./errors";
import { na } from "./sodium";

export const hmac = (key: Uint8Array, data: Uint8Array): Uint8Array =>
  na().crypto_auth_hmacsha256(data, key);

export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array | string, length: number): Uint8Array {
  if (length < 0 || length > 255 * 32) throw new RangeError("HKDF length");
  const prk = hmac(salt.length ? salt : new Uint8Array(32), ikm);
  const infoBytes = typeof info === "string" ? utf8(info) : info;
  const out: Uint8Array[] = [];
  let block: Uint8Array = new Uint8Array(0);
  for (let i = 1, n = 0; n < length; i++, n += 32) {
    block = hmac(prk, concat(block, infoBytes, new Uint8Array([i])));
    out.push(block);
  }
  return concat(...out).slice(0, length);
}

export function chainKdf(ck: Uint8Array): [Uint8Array, Uint8Array] {
  return [hmac(ck, new Uint8Array([1])), hmac(ck, new Uint8Array([2]))];
}

export function rootKdf(rk: Uint8Array, dhOut: Uint8Array): [Uint8Array, Uint8Array] {
  const out = hkdf(dhOut, rk, "gchat.ratchet.v1", 64);
  return [out.slice(0, 32), out.slice(32)];
}

const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

/** X25519; an all-zero result (low-order point) is an error, never a key. */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  if (publicKey.length !== 32) throw new InvalidKey("X25519 public key must be 32 bytes");
  let out: Uint8Array;
  try {
    out = na().crypto_scalarmult(privateKey, publicKey);
  } catch {
    throw new InvalidKey("X25519 failed");
  }
  if (isZero(out)) throw new InvalidKey("all-zero DH output");
  return out;
}

export function checkX25519Public(key: Uint8Array): void {
  dh(na().randombytes_buf(32), key);
}

export interface X25519Pair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

export function x25519Pair(): X25519Pair {
  const privateKey = na().randombytes_buf(32);
  return { privateKey, publicKey: na().crypto_scalarmult_base(privateKey) };
}

export interface Ed25519Pair {
  seed: Uint8Array;
  publicKey: Uint8Array;
  privateKey: Uint8Array; // libsodium's 64-byte expanded key
}

export function ed25519FromSeed(seed: Uint8Array): Ed25519Pair {
  const kp = na().crypto_sign_seed_keypair(seed);
  return { seed, publicKey: kp.publicKey, privateKey: kp.privateKey };
}

export const ed25519Generate = (): Ed25519Pair => ed25519FromSeed(na().randombytes_buf(32));

export const sign = (key: Ed25519Pair, message: Uint8Array): Uint8Array =>
  na().crypto_sign_detached(message, key.privateKey);

export function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): void {
  let ok = false;
  try {
    ok = publicKey.length === 32 && signature.length === 64 &&
      na().crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    ok = false;
  }
  if (!ok) throw new InvalidSignature("signature does not verify");
}

export function ed2xPublic(edPublic: Uint8Array): Uint8Array {
  try {
    return na().crypto_sign_ed25519_pk_to_curve25519(edPublic);
  } catch {
    throw new InvalidKey("not a usable Ed25519 public key");
  }
}

export const ed2xPrivate = (key: Ed25519Pair): Uint8Array =>
  na().crypto_sign_ed25519_sk_to_curve25519(key.privateKey);

/** Seal(k, m, ad) = nonce(24) || XChaCha20-Poly1305(k, nonce, m, ad). */
export function seal(key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
  const nonce = na().randombytes_buf(24);
  return concat(nonce, na().crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key));
}

export function open(key: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array {
  if (sealed.length < 24 + 16) throw new DecryptionFailed("ciphertext too short");
  try {
    return na().crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed.subarray(24), ad, sealed.subarray(0, 24), key);
  } catch {
    throw new DecryptionFailed("authentication failed");
  }
}

export const randomBytes = (n: number): Uint8Array => na().randombytes_buf(n);
export const sha256 = (m: Uint8Array): Uint8Array => na().crypto_hash_sha256(m);
export const sha512 = (m: Uint8Array): Uint8Array => na().crypto_hash_sha512(m);

export const x25519Public = (privateKey: Uint8Array): Uint8Array => na().crypto_scalarmult_base(privateKey);

/** Constant-time equality of secret values (libsodium `memcmp`); different lengths are unequal. */
export const secretEqual = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && na().memcmp(a, b);
