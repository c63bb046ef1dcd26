// wai playground, the Logs page: a gateway's logs through the AI Gateway logs API, filtered and paged by
// the server, with sums over every log the filters take (meta_info), not only the page shown.
// Loaded after client.js (the key, the API calls, errors).
"use strict";

const GATEWAYS_PER_PAGE = 100;
// The page's state in its address, so that a filtered view can be reloaded or shared.
const ADDRESS_FIELDS = {
  gateway: "gateway", model: "filter-model", status: "filter-status", cache: "filter-cache",
  meta_key: "filter-meta-key", meta_value: "filter-meta-value", per_page: "per-page",
};

const logsState = {
  page: 1,
  loading: 0,  // the number of the latest list asked for: an older answer that comes late is dropped
};

function gatewaysPath(suffix = "") { return `/client/v4/accounts/${ACCOUNT}/ai-gateway/gateways${suffix}`; }

function logsPath(suffix = "") { return gatewaysPath(`/${encodeURIComponent($("gateway").value)}/logs${suffix}`); }

// Formatting ------------------------------------------------------------------------------------

function shownNumber(value) { return value === null || value === undefined ? "" : Number(value).toLocaleString("en-US"); }

function shownCost(value) {
  if (value === null || value === undefined) return "";
  if (value === 0) return "$0";
  return value < 0.01 ? `$${Number(value).toPrecision(3)}` : `$${Number(value).toFixed(4)}`;
}

function shownMs(value) {
  if (value === null || value === undefined) return "";
  return value < 1000 ? `${value} ms` : `${(value / 1000).toFixed(2)} s`;
}

function shownTime(iso) {
  const time = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${time.getFullYear()}-${pad(time.getMonth() + 1)}-${pad(time.getDate())} ` +
    `${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}`;
}

// The list gives metadata as JSON text (Cloudflare's shape).
function shownMetadata(text) {
  let entries;
  try { entries = Object.entries(JSON.parse(text || "{}")); } catch (error) { return String(text); }
  return entries.map(([key, value]) => `${key}=${value}`).join(", ");
}

// Columns of the table; `ttft` is shown only when the logs carry it.
const COLUMNS = [
  { title: "Time", cell: (log) => shownTime(log.created_at) },
  { title: "Model", cell: (log) => log.model },
  { title: "Status", cell: (log) => String(log.status_code), className: (log) => (log.success ? "ok" : "failed") },
  { title: "Cached", cell: (log) => (log.cached ? "hit" : "miss") },
  { title: "Tokens in", cell: (log) => shownNumber(log.tokens_in), numeric: true },
  { title: "Tokens out", cell: (log) => shownNumber(log.tokens_out), numeric: true },
  { title: "Tokens cached", cell: (log) => shownNumber(log.tokens_cached), numeric: true },
  { title: "Cost", cell: (log) => shownCost(log.cost), numeric: true },
  { title: "Duration", cell: (log) => shownMs(log.duration), numeric: true },
  { title: "TTFT", cell: (log) => shownMs(log.ttft), numeric: true, optional: (logs) => logs.some((l) => l.ttft != null) },
  { title: "Metadata", cell: (log) => shownMetadata(log.metadata) },
];

// Gateways and models ---------------------------------------------------------------------------

async function loadGateways(wanted) {
  const gateways = [];
  for (let page = 1; ; page += 1) {
    const body = await getEnvelope(gatewaysPath(`?per_page=${GATEWAYS_PER_PAGE}&page=${page}`));
    gateways.push(...body.result);
    if (!body.result.length || gateways.length >= body.result_info.total_count) break;
  }
  const select = $("gateway");
  select.innerHTML = "";
  for (const gateway of gateways) select.add(new Option(gateway.id, gateway.id));
  if (!gateways.length) select.add(new Option("no gateway yet", ""));
  const ids = gateways.map((g) => g.id);
  select.value = ids.includes(wanted) ? wanted : (ids.includes("default") ? "default" : ids[0] || "");
}

// Model names to pick from; the filter takes any name, so a catalog that does not answer costs nothing.
async function loadModelNames() {
  try {
    const models = await getResult(aiPath("/models/search?per_page=100"));
    const list = $("model-names");
    for (const model of models) list.appendChild(new Option(model.name));
  } catch (error) { /* typing a name still works */ }
}

// The list --------------------------------------------------------------------------------------

function filters() {
  const chosen = [];
  const model = $("filter-model").value.trim();
  if (model) chosen.push({ key: "model", operator: "eq", value: model });
  const status = $("filter-status").value;
  if (status) chosen.push({ key: "success", operator: "eq", value: status === "success" });
  const cache = $("filter-cache").value;
  if (cache) chosen.push({ key: "cached", operator: "eq", value: cache === "hit" });
  // A key and a value filter hold for the same entry of a log's metadata.
  const metaKey = $("filter-meta-key").value.trim();
  if (metaKey) chosen.push({ key: "metadata.key", operator: "eq", value: metaKey });
  const metaValue = $("filter-meta-value").value.trim();
  if (metaValue) chosen.push({ key: "metadata.value", operator: "eq", value: metaValue });
  return chosen;
}

function listQuery() {
  const query = new URLSearchParams({
    page: String(logsState.page),
    per_page: $("per-page").value,
    order_by: "created_at",
    order_by_direction: "desc",
    meta_info: "true",
  });
  const chosen = filters();
  if (chosen.length) query.set("filters", JSON.stringify(chosen));
  return query;
}

// The section is aria-busy from the ask to the answer shown.
async function loadLogs() {
  clearError();
  rememberInAddress();
  const asked = ++logsState.loading;
  const section = $("logs");
  section.setAttribute("aria-busy", "true");
  try {
    if (!$("gateway").value) showLogs([], { total_count: 0, page: 1, per_page: 1 });
    else {
      const body = await getEnvelope(logsPath(`?${listQuery()}`));
      if (asked === logsState.loading) showLogs(body.result, body.result_info);
    }
  } catch (error) {
    if (asked === logsState.loading) showError(error);
  } finally {
    if (asked === logsState.loading) section.removeAttribute("aria-busy");
  }
}

function showLogs(logs, info) {
  const columns = COLUMNS.filter((column) => !column.optional || column.optional(logs));
  const head = $("log-head");
  head.innerHTML = "";
  for (const column of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = column.title;
    if (column.numeric) th.className = "numeric";
    head.appendChild(th);
  }
  const rows = $("log-rows");
  rows.innerHTML = "";
  for (const log of logs) rows.appendChild(logRow(log, columns));
  if (!logs.length) {
    const empty = rows.insertRow().insertCell();
    empty.colSpan = columns.length;
    empty.className = "empty";
    empty.textContent = $("gateway").value ? "No logs match." : "No gateway yet: a request through /v1/{account}/default/... makes one.";
  }
  showSums(info);
  showPager(info);
}

function logRow(log, columns) {
  const row = document.createElement("tr");
  row.tabIndex = 0;
  row.dataset.logId = log.id;
  row.title = "Show this request and its answer";
  for (const column of columns) {
    const cell = row.insertCell();
    cell.textContent = column.cell(log);
    const classes = [column.numeric && "numeric", column.className && column.className(log)].filter(Boolean);
    if (classes.length) cell.className = classes.join(" ");
  }
  row.addEventListener("click", () => showDetail(log.id));
  row.addEventListener("keydown", (event) => { if (event.key === "Enter") showDetail(log.id); });
  return row;
}

// Sums over every log the filters take, from the server (meta_info), whichever page is shown.
function showSums(info) {
  $("sum-count").textContent = shownNumber(info.total_count || 0);
  $("sum-tokens-in").textContent = shownNumber(info.total_tokens_in || 0);
  $("sum-tokens-out").textContent = shownNumber(info.total_tokens_out || 0);
  $("sum-tokens-cached").textContent = shownNumber(info.total_tokens_cached || 0);
  $("sum-cost").textContent = shownCost(info.total_cost || 0);
}

// Previous, the page numbers near this one (with the first and the last), next.
function showPager(info) {
  const pages = Math.max(1, Math.ceil((info.total_count || 0) / info.per_page));
  const current = Math.min(logsState.page, pages);
  const numbers = $("page-numbers");
  numbers.innerHTML = "";
  let previous = 0;
  for (let page = 1; page <= pages; page += 1) {
    if (page !== 1 && page !== pages && Math.abs(page - current) > 2) continue;
    if (page - previous > 1) numbers.appendChild(document.createTextNode(" … "));
    const button = document.createElement("button");
    Object.assign(button, { type: "button", textContent: String(page), className: "page-number" });
    if (page === current) button.setAttribute("aria-current", "page");
    button.addEventListener("click", () => goToPage(page));
    numbers.appendChild(button);
    previous = page;
  }
  $("previous").disabled = current <= 1;
  $("next").disabled = current >= pages;
  $("page-of").textContent = `page ${current} of ${pages}`;
}

function goToPage(page) {
  logsState.page = page;
  loadLogs();
}

function filterAgain() { goToPage(1); }

// One log ---------------------------------------------------------------------------------------

async function showDetail(id) {
  clearError();
  let log;
  try { log = await getResult(logsPath(`/${encodeURIComponent(id)}`)); } catch (error) { showError(error); return; }
  const fields = $("detail-fields");
  fields.innerHTML = "";
  const shown = {
    ID: log.id, Time: log.created_at, Model: log.model, Path: log.path, Status: log.status_code,
    Cached: log.cached ? "hit" : "miss", "Tokens in": log.tokens_in, "Tokens out": log.tokens_out,
    "Tokens cached": log.tokens_cached, Cost: shownCost(log.cost), Duration: shownMs(log.duration),
    Metadata: shownMetadata(log.metadata), "Request headers": log.request_head,
  };
  for (const [name, value] of Object.entries(shown)) {
    if (value === null || value === undefined || value === "") continue;
    const term = document.createElement("dt");
    term.textContent = name;
    const given = document.createElement("dd");
    given.textContent = String(value);
    fields.append(term, given);
  }
  $("detail-title").textContent = `Log ${log.id}`;
  $("detail-request").textContent = "loading…";
  $("detail-response").textContent = "loading…";
  $("detail-dialog").showModal();
  const [request, response] = await Promise.all([storedBody(id, "request"), storedBody(id, "response")]);
  $("detail-request").textContent = request;
  $("detail-response").textContent = response;
}

// A stored body as text, JSON indented; a log kept without its payload has none (404).
async function storedBody(id, which) {
  const answer = await call(logsPath(`/${encodeURIComponent(id)}/${which}`));
  if (answer.status === 404) return "not kept";
  const text = await answer.text();
  if (!answer.ok) return `HTTP ${answer.status}: ${text}`;
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (error) { return text; }
}

// The address -----------------------------------------------------------------------------------

function rememberInAddress() {
  const query = new URLSearchParams();
  for (const [name, id] of Object.entries(ADDRESS_FIELDS)) if ($(id).value) query.set(name, $(id).value);
  if (logsState.page > 1) query.set("page", String(logsState.page));
  history.replaceState(null, "", `${location.pathname}?${query}`);
}

function readAddress() {
  const query = new URLSearchParams(location.search);
  for (const [name, id] of Object.entries(ADDRESS_FIELDS)) {
    const value = query.get(name);
    if (value === null || id === "gateway") continue;
    const field = $(id);
    if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === value)) field.add(new Option(value));
    field.value = value;
  }
  logsState.page = Math.max(1, parseInt(query.get("page"), 10) || 1);
  return query.get("gateway");
}

// Wiring ----------------------------------------------------------------------------------------

function clearFilters() {
  for (const id of ["filter-model", "filter-status", "filter-cache", "filter-meta-key", "filter-meta-value"]) $(id).value = "";
  filterAgain();
}

async function init() {
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); filterAgain(); });
  for (const id of ["gateway", "filter-status", "filter-cache", "per-page"]) $(id).addEventListener("change", filterAgain);
  $("reset").addEventListener("click", clearFilters);
  $("previous").addEventListener("click", () => goToPage(logsState.page - 1));
  $("next").addEventListener("click", () => goToPage(logsState.page + 1));
  $("close-detail").addEventListener("click", () => $("detail-dialog").close());
  const wanted = readAddress();
  try { await loadGateways(wanted); } catch (error) {
    showError(error);
    $("logs").removeAttribute("aria-busy");
    return;
  }
  await loadLogs();
  loadModelNames();
}

init();
