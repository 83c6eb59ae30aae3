#!/usr/bin/env node
// grpclab's experiments from Node: send MyService.SayHello calls and count which pod answered.
//
// Input, either
//   JSON on stdin: {"runs": [{"name": "headless", "target": "dns://127.42.1.1:53/...",
//                             "lb_policy": "round_robin", "rpcs": 600, "concurrency": 8}]}
//   or arguments:  node client.js TARGET [--lb-policy round_robin] [--rpcs 600] [--concurrency 8]
// Output, one JSON object on stdout: {"results": {name: {"per_pod": {pod: OK replies},
//   "pod_ips": {pod: ip}, "errors": {code name: count}, "error_details": {code name: first
//   message}, "elapsed_s": seconds}}}. With arguments the one run is named "run".
//
// The API comes from protos/demo.proto at run time (@grpc/proto-loader): no generated code.
"use strict";

// grpc-js reads this once, when it is loaded. Without it, the DNS resolver ignores the
// authority of dns://SERVER/name and asks the machine's resolver, which does not know the
// cluster's names. An explicit value from the environment wins, so that case can be shown.
process.env.GRPC_NODE_USE_ALTERNATIVE_RESOLVER ??= "true";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO = path.resolve(__dirname, "..", "..", "protos", "demo.proto");

function loadStub() {
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, defaults: true });
  return grpc.loadPackageDefinition(definition).mypackage.MyService;
}

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => (text += chunk));
    process.stdin.on("end", () => resolve(text));
    process.stdin.on("error", reject);
  });
}

function parseArgs(argv) {
  const run = { name: "run", target: null };
  const flags = { "--lb-policy": "lb_policy", "--rpcs": "rpcs", "--concurrency": "concurrency" };
  for (let i = 0; i < argv.length; i++) {
    const key = flags[argv[i]];
    if (key) {
      const value = argv[++i];
      run[key] = key === "lb_policy" ? value : Number(value);
    } else if (run.target === null && !argv[i].startsWith("--")) {
      run.target = argv[i];
    } else {
      throw new Error(`unknown argument ${argv[i]} (usage: client.js TARGET [--lb-policy P] ` +
        "[--rpcs N] [--concurrency N], or JSON on stdin)");
    }
  }
  if (!run.target) throw new Error("no target given");
  return { runs: [run] };
}

function channelOptions(run) {
  // Each run gets its own connections, as a separate client process would.
  const options = { "grpc.use_local_subchannel_pool": 1 };
  if (run.lb_policy) {
    options["grpc.service_config"] = JSON.stringify({
      loadBalancingConfig: [{ [run.lb_policy]: {} }],
    });
  }
  return options;
}

async function drive(MyService, run) {
  const rpcs = run.rpcs ?? 600;
  const concurrency = run.concurrency ?? 8;
  // deadline_s null: calls without a deadline (LoadSpec(deadline_s=None)).
  const deadlineMs = run.deadline_s === null ? null : (run.deadline_s ?? 5) * 1000;
  // One channel for the whole run: the client the notebooks start from.
  const client = new MyService(run.target, grpc.credentials.createInsecure(), channelOptions(run));
  const perPod = {};
  const podIps = {};
  const errors = {};
  const errorDetails = {};
  let started = 0;
  const t0 = process.hrtime.bigint();

  const call = () =>
    new Promise((resolve) => {
      const options = deadlineMs === null ? {} : { deadline: new Date(Date.now() + deadlineMs) };
      client.SayHello({ name: "node" }, options, (error, reply) => resolve({ error, reply }));
    });

  async function worker() {
    while (started < rpcs) {
      started++;
      const { error, reply } = await call();
      if (error) {
        const code = grpc.status[error.code] ?? String(error.code);
        errors[code] = (errors[code] ?? 0) + 1;
        errorDetails[code] ??= error.details;
        continue;
      }
      const served = reply.served_by ?? {};
      const pod = served.pod_name || served.pod_ip || "unknown";
      perPod[pod] = (perPod[pod] ?? 0) + 1;
      podIps[pod] ??= served.pod_ip;
    }
  }

  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  client.close();
  return {
    per_pod: perPod,
    pod_ips: podIps,
    errors,
    error_details: errorDetails,
    elapsed_s: Math.round(elapsed * 1000) / 1000,
  };
}

async function main() {
  const argv = process.argv.slice(2);
  const input = argv.length ? parseArgs(argv) : JSON.parse(await readStdin());
  if (input.runs.some((run) => run.target.startsWith("xds:"))) {
    // xds:/// targets: the resolver and balancers from @grpc/grpc-js-xds, which reads the
    // bootstrap file named by $GRPC_XDS_BOOTSTRAP.
    require("@grpc/grpc-js-xds").register();
  }
  const MyService = loadStub();
  const results = {};
  for (const run of input.runs) {
    results[run.name] = await drive(MyService, run);
  }
  // The xDS client keeps its control-plane stream open: end once the answer is out.
  process.stdout.write(JSON.stringify({ results }) + "\n", () => process.exit(0));
}

main().catch((error) => {
  process.stderr.write(`grpclab node client: ${error.message}\n`);
  process.exit(2);
});
