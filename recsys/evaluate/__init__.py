"""Offline evaluation: ranking metrics, protocols, the champion/challenger gate."""
