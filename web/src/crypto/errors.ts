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
