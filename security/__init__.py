"""Identities, certificates, signing, replay guard and access control."""
