"""Identity: who a device is (authentication, tokens, enrolment, codes, revocation, prekeys)."""
