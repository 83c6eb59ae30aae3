"""What runs around the lab: the `grpclab` CLI, preflight checks, the offline wheelhouse, codegen.

Lives here: cli, preflight, missing, wheelhouse (also run as a script before install), codegen.
May import: anything in grpclab.
Nothing else in grpclab imports tools, except tools.missing (MissingTool, a leaf).
"""
