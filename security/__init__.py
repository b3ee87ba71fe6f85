"""Trust primitives: keys, certificates, crypto, the replay guard, access rules, errors.

The bottom floor (docs/architecture.md, Layers): it imports no other autocell
package.  Ed25519 signing and verifying (:mod:`.crypto`), certificates and
revocation lists (:mod:`.certs`), key files (:mod:`.keystore`), the replay
guard and its SQLite store (:mod:`.replay`, :mod:`.replay_store`), who may
say what (:mod:`.access`) and the error hierarchy every layer translates at
its boundary (:mod:`.errors`).  docs/SECURITY.md is the operator's view.
"""
