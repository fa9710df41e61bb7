/** The error kinds of PROTOCOL.md Part II §E11, so callers can tell them apart. */
export class CryptoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
export class InvalidSignature extends CryptoError {}
export class InvalidKey extends CryptoError {}
export class InvalidCertificate extends CryptoError {}
export class InvalidMessage extends CryptoError {}
export class InvalidState extends CryptoError {}
export class DecryptionFailed extends CryptoError {}
export class ReplayedMessage extends DecryptionFailed {}
export class TooManySkippedMessages extends DecryptionFailed {}
/** An attachment's chunk does not decrypt, carries a wrong tag, or its SHA-256 differs (§E13). */
export class AttachmentTampered extends DecryptionFailed {}
/** An attachment ends before its final chunk, or goes on after it (§E13). */
export class AttachmentTruncated extends DecryptionFailed {}
