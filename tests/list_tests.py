#!/usr/bin/python3
"""Lists the ctest entries of a unittest file, for tests/CMakeLists.txt at configure time: one line
per TestCase class ("Class"), and one more ("Class:once") for a class with @once tests, which ctest
runs apart (label once). Reads the file's syntax only (ast): nothing is imported or run.

Usage: list_tests.py SCRIPT
"""
import ast
import sys


def decorated_once(node):
    return any((isinstance(d, ast.Name) and d.id == "once") or
               (isinstance(d, ast.Attribute) and d.attr == "once") for d in node.decorator_list)


def main(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    tests = {}  # class name -> [(method name, once)], own methods after its bases'

    def collect(name):
        if name in tests:
            return tests[name]
        node = classes[name]
        found, is_test = [], False
        for base in node.bases:
            base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if base_name == "TestCase":
                is_test = True
            elif base_name in classes and collect(base_name) is not None:
                is_test = True
                found += collect(base_name)
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                found = [t for t in found if t[0] != item.name] + [(item.name, decorated_once(item))]
        tests[name] = found if is_test else None
        return tests[name]

    for name in classes:
        found = collect(name)
        if not found:
            continue
        if any(not once for _, once in found):
            print(name)
        if any(once for _, once in found):
            print(name + ":once")


if __name__ == "__main__":
    main(sys.argv[1])
