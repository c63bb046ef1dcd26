// A Worker whose `env.AI` is the Workers AI binding, wired to wai by wai.capnp.
// POST {"model", "inputs", "options"}: runs env.AI.run(model, inputs, options) and answers, as JSON,
// what the Worker got: the result (a stream read to its end), or the error thrown, with what the
// binding recorded about the call. {"gatewayLog": {"gateway", "logId", "patch"?}}: the gateway's
// getLog (after patchLog, when `patch` is given), through env.AI.gateway(id).
export default {
  async fetch(request, env) {
    if (request.method !== "POST") {
      return new Response("POST {model, inputs, options}\n");
    }
    const { model, inputs, options, models, gatewayLog } = await request.json();
    const got = {};
    try {
      if (gatewayLog) {
        const gateway = env.AI.gateway(gatewayLog.gateway);
        if (gatewayLog.patch) {
          await gateway.patchLog(gatewayLog.logId, gatewayLog.patch);
        }
        got.log = await gateway.getLog(gatewayLog.logId);
        return Response.json(got);
      }
      // {"models": {...}}: env.AI.models(params), the catalog search.
      const result = models ? await env.AI.models(models) : await env.AI.run(model, inputs, options);
      if (result instanceof ReadableStream) {
        got.stream = await new Response(result).text();
      } else if (result instanceof Response) {
        got.raw = { status: result.status, contentType: result.headers.get("content-type"), body: await result.json() };
      } else {
        got.result = result;
      }
    } catch (error) {
      got.error = { name: error.name, message: error.message, string: String(error) };
    }
    got.lastRequestId = env.AI.lastRequestId;
    got.lastRequestHttpStatusCode = env.AI.lastRequestHttpStatusCode;
    got.lastRequestInternalStatusCode = env.AI.lastRequestInternalStatusCode;
    got.aiGatewayLogId = env.AI.aiGatewayLogId;
    return Response.json(got);
  },
};
