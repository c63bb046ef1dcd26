// wai playground: what its pages share. Each page calls the public API as any client would, with the
// key kept in the tab's session storage: a key given on one page serves the other.
"use strict";

const ACCOUNT = "playground";
const KEY_STORAGE = "wai-playground-key";
const $ = (id) => document.getElementById(id);

function aiPath(path) { return `/client/v4/accounts/${ACCOUNT}/ai${path}`; }

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The key dialog (#key-dialog) of the page; the key goes to storage, never into the page.
function askForKey() {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    dialog.addEventListener("close", () => {
      const key = $("key").value.trim();
      $("key").value = "";
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      resolve(Boolean(key));
    }, { once: true });
    dialog.showModal();
    $("key").focus();
  });
}

// fetch with the session's key; on 401 ask for a key once and try again.
async function call(path, init = {}) {
  const send = () => fetch(path, { ...init, headers: { ...(init.headers || {}), ...authHeaders() } });
  let response = await send();
  if (response.status === 401 && await askForKey()) response = await send();
  return response;
}

// The whole envelope of a Cloudflare v4 answer (result and result_info), or the server's error.
async function getEnvelope(path) {
  const response = await call(path);
  const body = await response.json().catch(() => ({}));
  if (!response.ok || body.success === false) throw serverError(body, response.status);
  return body;
}

async function getResult(path) { return (await getEnvelope(path)).result; }

function serverError(body, status) {
  const first = (body && body.errors && body.errors[0]) || {};
  const error = new Error(first.message || `HTTP ${status}`);
  error.code = first.code;
  return error;
}

function showError(error) {
  const box = $("error");
  box.textContent = error.code ? `Error ${error.code}: ${error.message}` : `Error: ${error.message}`;
  box.hidden = false;
}

function clearError() { $("error").hidden = true; $("error").textContent = ""; }
