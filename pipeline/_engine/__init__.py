"""Private performance machinery: decoded-chunk store, per-thread scratch buffers, deferred
imports and the optional compiled kernels. Nothing here is public API."""
