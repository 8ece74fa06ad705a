"""Graph IR: the compiler's working representation between the ONNX frontend and the plan.

Reads: nothing (built by :mod:`picompile.frontend`, rewritten by passes).
Writes: nothing on its own; :func:`picompile.pipeline.lower_to_plan` turns it into a Plan.

A :class:`Graph` holds

* ``values`` — every tensor by name, each with a static shape, a dtype and, for constants, the
  numpy array (:class:`Value`);
* ``dag`` — a ``networkx.DiGraph`` whose nodes are op names (node attribute ``node`` holds the
  :class:`Node`) and whose edges run producer → consumer (edge attribute ``values`` lists the
  tensors that flow along it).

Graph inputs and outputs are value names. Topological order, dead-code removal and
predecessor queries come from networkx.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np


@dataclass
class Value:
    """A tensor: static shape, dtype, and the array itself when it is a constant."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass
class Node:
    """One op. ``source`` names the ONNX nodes it came from; ``meta`` holds pass annotations."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class Graph:
    """A dataflow graph of :class:`Node` over :class:`Value` (see module docstring)."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.dag = nx.DiGraph()
        self.values: dict[str, Value] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._order = 0

    # -- values -------------------------------------------------------------------------------
    def add_value(self, value: Value) -> Value:
        self.values[value.name] = value
        return value

    def add_constant(self, name: str, data: np.ndarray) -> Value:
        data = np.asarray(data)
        return self.add_value(Value(name, tuple(data.shape), str(data.dtype), data))

    def unique_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.values or name in self.dag:
            name, k = f"{base}_{k}", k + 1
        return name

    def shape(self, value: str) -> tuple[int, ...]:
        return self.values[value].shape

    def constant(self, value: str) -> np.ndarray | None:
        """The array of a constant value, or None for a runtime tensor."""
        return self.values[value].data

    # -- nodes --------------------------------------------------------------------------------
    def add_node(self, node: Node) -> Node:
        if node.name in self.dag:
            raise ValueError(f"duplicate node name {node.name!r}")
        self.dag.add_node(node.name, node=node, order=self._order)
        self._order += 1
        self._connect(node)
        return node

    def node(self, name: str) -> Node:
        return self.dag.nodes[name]["node"]

    def nodes(self) -> list[Node]:
        """Nodes in a deterministic topological order (ties broken by insertion order)."""
        order = nx.lexicographical_topological_sort(
            self.dag, key=lambda n: self.dag.nodes[n]["order"]
        )
        return [self.node(n) for n in order]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    def __len__(self) -> int:
        return self.dag.number_of_nodes()

    def producer(self, value: str) -> Node | None:
        for name in self.dag.nodes:
            node = self.node(name)
            if value in node.outputs:
                return node
        return None

    def consumers(self, value: str) -> list[Node]:
        return [n for n in self.nodes() if value in n.inputs]

    def remove_node(self, name: str) -> None:
        self.dag.remove_node(name)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer (and graph output) of ``old`` read ``new`` instead."""
        for node in self.consumers(old):
            node.inputs = [new if v == old else v for v in node.inputs]
            self._reconnect(node)
        self.outputs = [new if v == old else v for v in self.outputs]

    def bypass(self, node: Node, keep_input: str | None = None) -> None:
        """Remove a single-output pass-through node, rewiring its consumers to its input."""
        source = keep_input if keep_input is not None else node.inputs[0]
        output = node.outputs[0]
        self.remove_node(node.name)
        producer = self.producer(source)
        if output in self.outputs and producer is not None and source not in self.outputs:
            # Keep graph output names stable: the producer now writes the output directly.
            self.replace_uses(source, output)
            producer.outputs = [output if v == source else v for v in producer.outputs]
            self.values[output].shape = self.values[source].shape
            self._reconnect(producer)
            return
        self.replace_uses(output, source)

    def update_node(self, node: Node) -> None:
        """Re-derive the edges of ``node`` after its inputs or outputs changed."""
        self._reconnect(node)

    def prune(self) -> None:
        """Drop nodes that do not contribute to a graph output, and values nobody uses."""
        needed: set[str] = set()
        output_producers = [p.name for v in self.outputs if (p := self.producer(v)) is not None]
        for name in output_producers:
            needed.add(name)
            needed |= nx.ancestors(self.dag, name)
        for name in list(self.dag.nodes):
            if name not in needed:
                self.dag.remove_node(name)
        used = set(self.inputs) | set(self.outputs)
        for node in self.nodes():
            used.update(node.inputs)
            used.update(node.outputs)
        for name in list(self.values):
            if name not in used:
                del self.values[name]

    # -- edges --------------------------------------------------------------------------------
    def _connect(self, node: Node) -> None:
        for other in list(self.dag.nodes):
            if other == node.name:
                continue
            peer = self.node(other)
            shared_in = [v for v in node.inputs if v in peer.outputs]
            if shared_in:
                self.dag.add_edge(other, node.name, values=shared_in)
            shared_out = [v for v in node.outputs if v in peer.inputs]
            if shared_out:
                self.dag.add_edge(node.name, other, values=shared_out)

    def _reconnect(self, node: Node) -> None:
        for pred in list(self.dag.predecessors(node.name)):
            self.dag.remove_edge(pred, node.name)
        for succ in list(self.dag.successors(node.name)):
            self.dag.remove_edge(node.name, succ)
        self._connect(node)
