"""hybrid — HE linear layers (BFV) + 2-party MPC activations, client and server apart.

Reads: a hybrid plan (``--protocol hybrid``: ``hybrid_parameters`` and ``layout`` passes ran),
a :class:`~picompile.runtime.channel.Channel` to the peer (and, with ``correlations="dealer"``,
one to the dealer), the client's input.
Writes: the client's decrypted output, per-phase traffic (bytes, messages, flights) and times.

Protocol (docs/protocol.md; Delphi-style preprocessing for linear layers):

* setup — ``hello`` (protocol version, fingerprint of the public part of the plan), ``keys``
  (BFV public and rotation keys per plaintext prime, client → server).
* offline, per inference — for every HE linear step the client draws a mask m (uniform in
  [0, 2^62), CSPRNG) and sends Enc(−m) per prime; the server returns Enc(W·(−m) − r) with r
  uniform mod each prime, plus a fresh encryption of zero; the client decrypts z. Both parties
  then make every Beaver/AND/bit correlation the inference needs by oblivious transfer with
  each other (default; base OTs once at setup, docs/protocol.md §11) or fetch it from the
  dealer (a third party), by a dry run of the share protocols on zeros (same order at both).
* online — every tensor is additively shared over Z_2^64 in fixed point (f fractional bits),
  client = P0, server = P1; the client's input share is encode(x), the server's is 0.
  Linear step: the client sends u = a_C + m (8 bytes per element, one flight); the server reads
  w = u + a_S as a signed integer (= a + m exactly), computes S = W·w + b + r mod each prime in
  plaintext; (z, S) are shares of W·a + b mod T; both lift to centered integers (wrong with
  probability |y|/T per element) and truncate locally by the weight bits. ReLU, MaxPool and
  polynomials run the share protocols of :mod:`picompile.runtime.mpc`; Add and Reshape are
  local. The server sends its share of the final output (``result``), the client adds.

The client never receives weights: it works from :func:`client_view` (weights, diagonals and
biases removed) and the plan fingerprint both sides check covers only that public part.

Modules: :mod:`.views` (what is read from the plan; client view, fingerprint), :mod:`.wire`
(bit packing, blocks, the two-party opening), :mod:`.randomness` (CSPRNG), :mod:`.dealer`,
:mod:`.correlations` (the dealer's correlations made by OT between the parties),
:mod:`.kernels` (integer forms of the steps), :mod:`.party` (the walk on shares shared by
:mod:`.client` and :mod:`.server`), :mod:`.backend` (all in one process), :mod:`.service` (TCP).
This package re-exports the names used elsewhere.
"""

from picompile.runtime.hybrid.backend import HybridBackend
from picompile.runtime.hybrid.client import HybridClient
from picompile.runtime.hybrid.dealer import run_dealer
from picompile.runtime.hybrid.server import HybridServer
from picompile.runtime.hybrid.service import client_run, dealer_service, serve
from picompile.runtime.hybrid.views import client_view, fingerprint, hybrid_settings

__all__ = ["HybridBackend", "HybridClient", "HybridServer", "client_run", "client_view",
           "dealer_service", "fingerprint", "hybrid_settings", "run_dealer", "serve"]
