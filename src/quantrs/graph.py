"""Walking a model's graphs: the main graph and every If/Loop/Scan body, nested to any depth.

ONNX values live in one namespace across a graph and its bodies (a body may read any value of
an enclosing graph, and may not redefine one), so a value name identifies one definition in the
whole model. This module owns the traversal and the scoping rules the plan and the rewrite rely
on: which graph defines a value and every place it is read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import onnx

__all__ = [
    "MAIN",
    "Scope",
    "Use",
    "GraphIndex",
    "walk_graphs",
    "subgraphs",
    "constant_tensor",
    "name_maker",
    "FreshName",
    "separate_sibling_names",
]

MAIN = ""  # the main graph's scope name

# What name_maker returns: fresh(base) is a name no other node or tensor of the model uses.
FreshName = Callable[[str], str]


@dataclass(frozen=True)
class Scope:
    """One graph of the model: its path from the main graph and the GraphProto itself."""

    path: tuple[str, ...]  # () for the main graph; one label per level, e.g. ("If 'vad' then_branch",)
    graph: onnx.GraphProto = field(compare=False, hash=False, repr=False)

    @property
    def name(self) -> str:
        return " > ".join(self.path) if self.path else MAIN

    def is_within(self, other: Scope) -> bool:
        return self.path[: len(other.path)] == other.path


@dataclass(frozen=True)
class Use:
    """Input `index` of `node`, in graph `scope`, reads the value."""

    node: onnx.NodeProto = field(repr=False)
    index: int
    scope: Scope

    @property
    def op(self) -> str:
        return self.node.op_type


def subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """(attribute name, body) for every graph attribute of a node (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for k, g in enumerate(attr.graphs):
                yield f"{attr.name}[{k}]", g


def _label(node: onnx.NodeProto, index: int, attr: str) -> str:
    who = f"{node.op_type} {node.name!r}" if node.name else f"{node.op_type} #{index}"
    return f"{who} {attr}"


def walk_graphs(graph: onnx.GraphProto, path: tuple[str, ...] = ()) -> Iterator[Scope]:
    """The graph, then every body inside it, depth first, in node order."""
    yield Scope(path, graph)
    for i, node in enumerate(graph.node):
        for attr, body in subgraphs(node):
            yield from walk_graphs(body, path + (_label(node, i, attr),))


def constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node holds in its `value` attribute (None for value_float & co.)."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return attr.t
    return None


def separate_sibling_names(graph: onnx.GraphProto) -> dict[str, str]:
    """Give every stored tensor a name of its own across the model, and return {new: original}.

    Sibling bodies (an If's two branches, two Loops' bodies) are separate scopes, so each may
    store its own tensor under the same name (`W` in both branches): legal, and what exporters
    write. Everything downstream names a tensor by its value name, so each later definition is
    renamed `W__2`, `W__3`, ... within its own body (its uses there and in bodies nested in it, and
    the body's outputs, which If/Loop/Scan match by position): the model computes the same. The
    first keeps its name.
    """
    taken = {name for scope in walk_graphs(graph) for name in _defined(scope.graph)}
    owner: dict[str, Scope] = {}
    renamed: dict[str, str] = {}
    for scope in walk_graphs(graph):
        for name in _stored(scope.graph):
            if name not in owner:
                owner[name] = scope
                continue
            if scope.is_within(owner[name]) or owner[name].is_within(scope):
                continue  # nested: invalid, and the loader says so
            k = 2
            while f"{name}__{k}" in taken:
                k += 1
            new = f"{name}__{k}"
            taken.add(new)
            renamed[new] = name
            _rename(scope.graph, name, new)
    return renamed


def _stored(graph: onnx.GraphProto) -> list[str]:
    names = [t.name for t in graph.initializer]
    names += [node.output[0] for node in graph.node if constant_tensor(node) is not None and node.output and node.output[0]]
    return names


def _defined(graph: onnx.GraphProto) -> Iterator[str]:
    yield from (v.name for v in graph.input)
    yield from (t.name for t in graph.initializer)
    for node in graph.node:
        yield from node.output


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename value `old` defined in `graph` (as a stored tensor) to `new`, wherever it is read
    in `graph` and in the bodies nested in it."""
    for t in graph.initializer:
        if t.name == old:
            t.name = new
    for value in (*graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        if constant_tensor(node) is not None and node.output and node.output[0] == old:
            node.output[0] = new
        for _, body in subgraphs(node):
            _rename(body, old, new)


class GraphIndex:
    """Where each value of a model is defined and read, across all scopes.

    Built once from a model (its graphs must not change while the index is used).
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.scopes: list[Scope] = list(walk_graphs(graph))
        self.main = self.scopes[0]
        self.uses: dict[str, list[Use]] = defaultdict(list)
        self.producers: dict[str, tuple[onnx.NodeProto, Scope]] = {}
        self.graph_inputs: dict[str, Scope] = {}
        self.graph_outputs: dict[str, list[Scope]] = defaultdict(list)
        for scope in self.scopes:
            for value in scope.graph.input:
                self.graph_inputs.setdefault(value.name, scope)
            for value in scope.graph.output:
                self.graph_outputs[value.name].append(scope)
            for node in scope.graph.node:
                for index, name in enumerate(node.input):
                    if name:
                        self.uses[name].append(Use(node, index, scope))
                for name in node.output:
                    if name:
                        self.producers.setdefault(name, (node, scope))

    def all_names(self) -> set[str]:
        """Every value, node and initializer name in the model (for choosing fresh names)."""
        names: set[str] = set()
        for scope in self.scopes:
            g = scope.graph
            names.update(t.name for t in g.initializer)
            names.update(v.name for v in g.input)
            names.update(v.name for v in g.output)
            names.update(v.name for v in g.value_info)
            for node in g.node:
                names.add(node.name)
                names.update(node.input)
                names.update(node.output)
        names.discard("")
        return names


def name_maker(taken: set[str]) -> FreshName:
    """The name authority of a rewrite: fresh(base) gives base, or base_1, base_2, ... the first
    that is not in `taken` (every name the model uses: GraphIndex.all_names()) nor given before."""

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    return fresh
