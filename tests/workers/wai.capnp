# A local Worker whose AI binding (`env.AI`) is answered by wai instead of Cloudflare:
#   npx workerd serve wai.capnp
# The binding is Cloudflare's own code (the `cloudflare-internal:ai-api` module); its `fetcher` is wai.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (
      name = "wai",
      external = (
        address = "127.0.0.1:8000",  # wai serve's address
        # wai's API key (one of `api_keys`); leave this out when wai runs without keys.
        http = (injectRequestHeaders = [(name = "Authorization", value = "Bearer YOUR_WAI_API_KEY")]),
      ),
    ),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "main")],
);

const worker :Workerd.Worker = (
  modules = [(name = "worker", esModule = embed "worker.js")],
  compatibilityDate = "2025-09-01",
  bindings = [
    (
      name = "AI",
      wrapped = (
        moduleName = "cloudflare-internal:ai-api",
        innerBindings = [(name = "fetcher", service = "wai")],
      ),
    ),
  ],
);
