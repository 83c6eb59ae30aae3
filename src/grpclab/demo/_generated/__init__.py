"""Generated from protos/ by grpclab.tools.codegen."""
