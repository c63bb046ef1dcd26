// wai playground: a chat page that uses only wai's public endpoints, as any client would.
// Loaded after client.js (the key, the API calls, errors).
"use strict";

const state = {
  models: [],          // catalog entries for text generation
  history: [],         // [{role, content}] of the conversation so far
  controller: null,    // AbortController of the stream under way
  samplingFields: {},  // name -> JSON schema of the field, from the model's published input schema
};

function property(model, id) {
  const found = (model.properties || []).find((p) => p.property_id === id);
  return found ? String(found.value) : undefined;
}

// Catalog ---------------------------------------------------------------------------------------

async function loadModels() {
  const result = await getResult(aiPath("/models/search?per_page=100"));
  state.models = result.filter((m) => (m.task && m.task.name || "").toLowerCase() === "text generation");
  const select = $("model");
  select.innerHTML = "";
  for (const model of state.models) select.add(new Option(model.name, model.name));
  const preferred = state.models.find((m) => m.name === "@cf/meta/llama-3-8b-instruct");
  if (preferred) select.value = preferred.name;
  await selectModel();
}

function currentModel() { return state.models.find((m) => m.name === $("model").value); }

async function selectModel() {
  const model = currentModel();
  if (!model) return;
  $("model-note").textContent = model.description || "";
  const schema = await getResult(aiPath(`/models/schema?model=${encodeURIComponent(model.name)}`));
  buildSamplingControls(schema.input);
  await loadAdapters(model);
}

function inputProperties(inputSchema) {
  // The text-generation input is a oneOf of the prompt and messages forms; both share the sampling fields.
  const forms = inputSchema.oneOf || [inputSchema];
  return forms.reduce((all, form) => ({ ...all, ...(form.properties || {}) }), {});
}

function buildSamplingControls(inputSchema) {
  const container = $("sampling");
  const previous = readSampling();
  container.innerHTML = "";
  state.samplingFields = {};
  for (const [name, field] of Object.entries(inputProperties(inputSchema))) {
    if (field.type !== "number" && field.type !== "integer") continue;
    state.samplingFields[name] = field;
    const row = document.createElement("div");
    row.className = "field";
    const id = `sampling-${name}`;
    const range = [field.minimum, field.maximum].some((v) => v !== undefined)
      ? `${field.minimum ?? "…"} to ${field.maximum ?? "…"}` : "";
    const input = document.createElement("input");
    Object.assign(input, { type: "number", id, name });
    if (field.minimum !== undefined) input.min = field.minimum;
    if (field.maximum !== undefined) input.max = field.maximum;
    input.step = field.type === "integer" ? "1" : "any";
    input.placeholder = "default";
    const value = name in previous ? previous[name] : field.default;
    if (value !== undefined) input.value = value;
    row.innerHTML = `<label for="${id}">${name}</label>`;
    row.appendChild(input);
    const help = document.createElement("small");
    help.textContent = [range && `range ${range}`, field.default !== undefined && `default ${field.default}`]
      .filter(Boolean).join(", ");
    row.appendChild(help);
    container.appendChild(row);
  }
}

function readSampling() {
  const values = {};
  for (const input of $("sampling").querySelectorAll("input")) {
    if (input.value.trim() === "") continue;
    values[input.name] = Number(input.value);
  }
  return values;
}

async function loadAdapters(model) {
  const select = $("adapter");
  select.length = 1;  // keep "none"
  const lora = property(model, "lora") === "true";
  $("adapter-row").hidden = !lora;
  if (!lora) return;
  try {
    const adapters = await getResult(aiPath("/finetunes"));
    for (const adapter of adapters) select.add(new Option(`${adapter.name} (${adapter.model})`, adapter.name));
  } catch (error) { showError(error); }
}

// Requests --------------------------------------------------------------------------------------

function conversation(pendingText) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.history);
  if (pendingText) messages.push({ role: "user", content: pendingText });
  return messages;
}

function requestBody(messages) {
  const body = { messages, ...readSampling() };
  const adapter = !$("adapter-row").hidden && $("adapter").value;
  if (adapter) body.lora = adapter;
  if ($("json-mode").checked) {
    const text = $("schema").value.trim();
    body.response_format = text ? { type: "json_schema", json_schema: parsed(text, "the JSON schema") } : { type: "json_object" };
  }
  if ($("tools-on").checked) {
    body.tools = parsed($("tools").value, "the tools");
    body.tool_choice = $("tool-choice").value;
  }
  return body;
}

function parsed(text, what) {
  try { return JSON.parse(text); } catch (error) { throw new Error(`${what} is not valid JSON: ${error.message}`); }
}

function showToolCalls(output, calls) {
  for (const call of calls) {
    const shown = document.createElement("code");
    shown.className = "tool-call";
    shown.textContent = `${call.name}(${JSON.stringify(call.arguments)})`;
    output.parentElement.appendChild(shown);
  }
}

function addMessage(role, content) {
  const item = document.createElement("li");
  item.className = role;
  item.innerHTML = `<span class="role">${role}</span>`;
  const text = document.createElement("span");
  text.className = "content";
  text.textContent = content;
  item.appendChild(text);
  $("messages").appendChild(item);
  item.scrollIntoView({ block: "end" });
  return text;
}

// The list follows a streaming answer while its end is in view; a reader who scrolled up stays put.
function appendToAnswer(output, text) {
  const list = $("messages");
  const following = output.getBoundingClientRect().bottom <= list.getBoundingClientRect().bottom + 1;
  output.textContent += text;
  if (following) list.scrollTop = list.scrollHeight;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(event) {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || state.controller) return;
  clearError();
  let body;
  try { body = { ...requestBody(conversation(text)), stream: true }; } catch (error) {
    showError(error);
    return;
  }
  $("input").value = "";
  addMessage("user", text);
  state.history.push({ role: "user", content: text });
  const output = addMessage("assistant", "");
  output.parentElement.setAttribute("aria-busy", "true");
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  $("stats").textContent = "";
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  const toolCalls = [];
  try {
    const response = await call(aiPath(`/run/${$("model").value}`), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw serverError(await response.json().catch(() => ({})), response.status);
    for await (const event of serverSentEvents(response.body)) {
      if (event.errors && event.errors.length) throw serverError(event, 500);
      if (event.response) {
        if (firstToken === null) firstToken = performance.now();
        appendToAnswer(output, event.response);
      }
      if (event.tool_calls && event.tool_calls.length) {
        showToolCalls(output, event.tool_calls);
        toolCalls.push(...event.tool_calls);
      }
      if (event.usage) usage = event.usage;
    }
  } catch (error) {
    if (error.name === "AbortError") output.textContent += " [stopped]";
    else showError(error);
  } finally {
    output.parentElement.removeAttribute("aria-busy");
    const said = { role: "assistant", content: output.textContent.replace(/ \[stopped\]$/, "") };
    state.history.push(toolCalls.length ? { ...said, tool_calls: toolCalls } : said);
    state.controller = null;
    setBusy(false);
    showStats(usage, started, firstToken);
    $("input").focus();
  }
}

async function* serverSentEvents(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function showStats(usage, started, firstToken) {
  if (!usage) return;
  const parts = [`prompt ${usage.prompt_tokens} tokens`, `completion ${usage.completion_tokens} tokens`];
  if (firstToken !== null) {
    parts.push(`time to first token ${((firstToken - started) / 1000).toFixed(2)} s`);
    const seconds = (performance.now() - firstToken) / 1000;
    if (seconds > 0 && usage.completion_tokens > 1) {
      parts.push(`${((usage.completion_tokens - 1) / seconds).toFixed(1)} tokens/s`);
    }
  }
  $("stats").textContent = parts.join(" · ");
}

function stop() { if (state.controller) state.controller.abort(); }

// View code -------------------------------------------------------------------------------------

function toPython(value, indent = "") {
  const inner = indent + "    ";
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + toPython(v, inner)).join(",\n")},\n${indent}]`;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${toPython(v, inner)}`).join(",\n")},\n${indent}}`;
  }
  return JSON.stringify(value);
}

function toPythonKwargs(body) {
  return Object.entries(body).map(([k, v]) => `    ${k}=${toPython(v, "    ")},`).join("\n");
}

// The same request in the two newer APIs' own words (OpenAI's Responses, Anthropic's Messages).
function responsesArguments(model, body) {
  const asked = { model, input: body.messages, max_output_tokens: body.max_tokens };
  for (const name of ["temperature", "top_p"]) if (body[name] !== undefined) asked[name] = body[name];
  return asked;
}

function messagesArguments(model, body) {
  const system = body.messages.filter((m) => m.role === "system").map((m) => m.content).join("\n");
  const asked = { model, max_tokens: body.max_tokens || 256, messages: body.messages.filter((m) => m.role !== "system") };
  if (system) asked.system = system;
  // The anthropic SDK's create() no longer names the sampling fields; the API still takes them.
  const sampling = {};
  if (body.temperature !== undefined) sampling.temperature = Math.min(body.temperature, 1);
  for (const name of ["top_p", "top_k"]) if (body[name] !== undefined) sampling[name] = body[name];
  if (Object.keys(sampling).length) asked.extra_body = sampling;
  return asked;
}

function codeSamples() {
  const model = $("model").value;
  const body = requestBody(conversation($("input").value.trim()));
  const base = `${location.origin}/client/v4`;
  const url = `${base}/accounts/$ACCOUNT_ID/ai/run/${model}`;
  const json = JSON.stringify(body, null, 2);
  return {
    curl: `curl "${url}" \\\n  -H "Authorization: Bearer $WAI_API_KEY" \\\n  -d '${json.replace(/'/g, "'\\''")}'`,
    "Python (requests)": `import os\n\nimport requests\n\nresponse = requests.post(\n` +
      `    f"${base}/accounts/{os.environ['ACCOUNT_ID']}/ai/run/${model}",\n` +
      `    headers={"Authorization": f"Bearer {os.environ['WAI_API_KEY']}"},\n` +
      `    json=${toPython(body, "    ")},\n)\nprint(response.json()["result"])`,
    "Python (cloudflare)": `import os\n\nfrom cloudflare import Cloudflare\n\n` +
      `client = Cloudflare(api_token=os.environ["WAI_API_KEY"], base_url="${base}")\n` +
      `result = client.ai.run(\n    "${model}",\n    account_id=os.environ["ACCOUNT_ID"],\n${toPythonKwargs(body)}\n)\nprint(result)`,
    "Python (openai, Responses)": `import os\n\nfrom openai import OpenAI\n\n` +
      `client = OpenAI(api_key=os.environ["WAI_API_KEY"], base_url="${location.origin}/v1")\n` +
      `response = client.responses.create(\n${toPythonKwargs(responsesArguments(model, body))}\n)\nprint(response.output_text)`,
    "Python (anthropic)": `import os\n\nfrom anthropic import Anthropic\n\n` +
      `client = Anthropic(api_key=os.environ["WAI_API_KEY"], base_url="${location.origin}")\n` +
      `message = client.messages.create(\n${toPythonKwargs(messagesArguments(model, body))}\n)\nprint(message.content[0].text)`,
    "Worker (env.AI.run)": `export default {\n  async fetch(request, env) {\n` +
      `    const answer = await env.AI.run("${model}", ${JSON.stringify(body, null, 2).replace(/\n/g, "\n    ")});\n` +
      `    return Response.json(answer);\n  },\n};`,
  };
}

function showCode(name) {
  const samples = codeSamples();
  const tabs = $("code-tabs");
  tabs.innerHTML = "";
  for (const key of Object.keys(samples)) {
    const tab = document.createElement("button");
    Object.assign(tab, { type: "button", textContent: key });
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-selected", String(key === name));
    tab.addEventListener("click", () => showCode(key));
    tabs.appendChild(tab);
  }
  $("code").textContent = samples[name];
}

function openCode() {
  clearError();
  try { showCode("curl"); } catch (error) { showError(error); return; }
  $("code-dialog").showModal();
}

// Wiring ----------------------------------------------------------------------------------------

function init() {
  $("composer").addEventListener("submit", send);
  $("stop").addEventListener("click", stop);
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && state.controller) stop(); });
  $("model").addEventListener("change", () => selectModel().catch(showError));
  $("json-mode").addEventListener("change", () => { $("schema-row").hidden = !$("json-mode").checked; });
  $("tools-on").addEventListener("change", () => { $("tools-row").hidden = !$("tools-on").checked; });
  $("clear").addEventListener("click", () => { state.history = []; $("messages").innerHTML = ""; clearError(); });
  $("view-code").addEventListener("click", openCode);
  $("close-code").addEventListener("click", () => $("code-dialog").close());
  $("copy-code").addEventListener("click", () => navigator.clipboard.writeText($("code").textContent));
  loadModels().catch(showError);
}

init();
