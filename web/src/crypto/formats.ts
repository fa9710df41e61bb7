/** Signed byte formats of PROTOCOL.md §9 / Part II §E3 and the membership signature. */
import { concat, equal, readU64, u16be, u32be, utf8, uuidString } from "./bytes";
import { InvalidCertificate, InvalidKey } from "./errors";
import { checkX25519Public, ed2xPublic, verify } from "./primitives";

export function authMessage(serverId: string, nonce: Uint8Array): Uint8Array {
  const sid = utf8(serverId);
  return concat(utf8("gchat.auth.v1"), u16be(sid.length), sid, nonce);
}

export function signedPrekeyMessage(keyId: number, publicKey: Uint8Array): Uint8Array {
  return concat(utf8("gchat.spk.v1"), u32be(keyId), publicKey);
}

/** §E3.2: key id, usable key (InvalidKey), then the signature (InvalidSignature). */
export function verifySignedPrekey(identityKey: Uint8Array, keyId: number, publicKey: Uint8Array, signature: Uint8Array): void {
  if (!Number.isInteger(keyId) || keyId < 0 || keyId > 0xffffffff) throw new InvalidKey("bad key id");
  checkX25519Public(publicKey);
  verify(identityKey, signedPrekeyMessage(keyId, publicKey), signature);
}

export interface Certificate {
  officialId: string;
  agencyId: string;
  deviceId: string;
  identityKey: Uint8Array;
  issuedAt: number;
  raw: Uint8Array;
}

export const CERTIFICATE_SIZE = 153;

/** §E3.3: length, version, directory signature and a usable identity key, or InvalidCertificate. */
export function verifyCertificate(raw: Uint8Array, directoryKey: Uint8Array): Certificate {
  if (raw.length !== CERTIFICATE_SIZE || raw[0] !== 0x01) throw new InvalidCertificate("bad certificate size or version");
  try {
    verify(directoryKey, concat(utf8("gchat.cert.v1"), raw.subarray(0, 89)), raw.subarray(89));
    ed2xPublic(raw.subarray(49, 81));
  } catch {
    throw new InvalidCertificate("certificate does not verify");
  }
  return {
    officialId: uuidString(raw.subarray(1, 17)),
    agencyId: uuidString(raw.subarray(17, 33)),
    deviceId: uuidString(raw.subarray(33, 49)),
    identityKey: raw.slice(49, 81),
    issuedAt: readU64(raw, 81),
    raw,
  };
}

/** A certificate that verifies and names exactly this device and official. */
export function certificateFor(raw: Uint8Array, directoryKey: Uint8Array, officialId: string, deviceId: string, identityKey?: Uint8Array): Certificate {
  const cert = verifyCertificate(raw, directoryKey);
  if (cert.officialId !== officialId || cert.deviceId !== deviceId) throw new InvalidCertificate("certificate names another device");
  if (identityKey !== undefined && !equal(cert.identityKey, identityKey)) throw new InvalidCertificate("certificate is for another key");
  return cert;
}

export function verifyMembership(event: Uint8Array, signature: Uint8Array, directoryKey: Uint8Array): void {
  verify(directoryKey, concat(utf8("gchat.membership.v1"), event), signature);
}
