/* The live search view of `ttsearch serve` (GET /): start a search, watch its tree grow, or
 * open a search's tree by id (also as /?tree=<id>). Plain JavaScript over the server's API:
 *
 *   GET  /v1/models                  the searches to choose from
 *   POST /v1/chat/completions        stream=true; the first chunk's id names the search's tree
 *   GET  /v1/trees/{id}/events       the tree's snapshots as it grows, the last when it ended
 *
 * Streams are read with fetch, not EventSource, which cannot send the Authorization header
 * a server with an API key needs. The key stays in this tab (sessionStorage).
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "ttsearch.apiKey";
  let following = null; // the AbortController of the tree stream shown now

  function headers(extra) {
    const out = Object.assign({}, extra);
    const key = $("api-key").value.trim();
    if (key) out.Authorization = `Bearer ${key}`;
    return out;
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.dataset.kind = kind || "info";
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (ignored) {
      // not the API's error object: the status line says enough
    }
    return `${response.status} ${response.statusText}`;
  }

  /* Call onData with each `data:` payload of a server-sent event stream, JSON-decoded, until
   * `[DONE]` or the end of the stream; comments (keep-alives) are skipped. */
  async function readEvents(response, onData) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trimStart())
            .join("\n");
          if (!data) continue;
          if (data === "[DONE]") return;
          onData(JSON.parse(data));
        }
      }
    } finally {
      reader.cancel().catch(() => {}); // closes the connection if we stopped early
    }
  }

  function treeIdOf(responseId) {
    return responseId.trim().replace(/^(chatcmpl|cmpl)-/, "");
  }

  function showAnswer(answer) {
    const none = answer === null || answer === undefined;
    $("answer-box").hidden = none;
    $("answer").textContent = none ? "" : answer;
  }

  function describe(tree) {
    const nodes = `${tree.nodes.length} node${tree.nodes.length === 1 ? "" : "s"}`;
    switch (tree.status) {
      case "queued":
        return `search ${tree.id} (${tree.model}): waiting for a search slot`;
      case "searching":
        return `search ${tree.id} (${tree.model}): searching, ${nodes} so far`;
      case "finished":
        return `search ${tree.id} (${tree.model}): finished, ${nodes}`;
      case "failed":
        return `search ${tree.id} (${tree.model}) failed: ${tree.error}`;
      default:
        return `search ${tree.id} (${tree.model}): ${tree.status} (its client left), ${nodes}`;
    }
  }

  function showTree(tree) {
    const box = $("tree");
    TreeView.render(box, tree);
    box.dataset.status = tree.status;
    box.dataset.treeId = tree.id;
    if (tree.status === "finished") showAnswer(tree.answer);
    setStatus(describe(tree), tree.status === "failed" ? "error" : "info");
  }

  /* Show the tree `id` until its search ends (one snapshot if it has). */
  async function follow(id) {
    if (following) following.abort();
    const controller = new AbortController();
    following = controller;
    try {
      const url = `/v1/trees/${encodeURIComponent(id)}/events`;
      const response = await fetch(url, { headers: headers(), signal: controller.signal });
      if (!response.ok) throw new Error(await errorMessage(response));
      await readEvents(response, showTree);
    } catch (error) {
      if (error.name !== "AbortError") setStatus(error.message, "error"); // aborted: another tree is shown
    }
  }

  function remember(id) {
    $("tree-id").value = id;
    history.replaceState(null, "", `?tree=${encodeURIComponent(id)}`);
  }

  async function openTree(text) {
    const id = treeIdOf(text);
    if (!id) {
      setStatus("type a search's id: the response's id (chatcmpl-…) or its hex part", "error");
      return;
    }
    remember(id);
    showAnswer(null);
    setStatus(`opening ${id}…`);
    await follow(id);
  }

  async function search(event) {
    event.preventDefault();
    const problem = $("problem").value.trim();
    const model = $("model").value;
    if (!problem) return setStatus("type a problem first", "error");
    if (!model) return setStatus("no search to run: the model list did not load (an API key?)", "error");
    $("search").disabled = true;
    showAnswer(null);
    setStatus(`starting ${model}…`);
    let tree = null; // the tree stream, followed beside the answer's
    try {
      const body = { model, stream: true, messages: [{ role: "user", content: problem }] };
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      let answer = null;
      await readEvents(response, (chunk) => {
        if (chunk.error) throw new Error(chunk.error.message);
        if (tree === null) {
          remember(treeIdOf(chunk.id));
          tree = follow(treeIdOf(chunk.id));
        }
        if (chunk.search && "answer" in chunk.search) answer = chunk.search.answer;
      });
      if (tree !== null) await tree; // its last snapshot: the finished tree
      showAnswer(answer);
    } catch (error) {
      setStatus(error.message, "error");
    } finally {
      $("search").disabled = false;
    }
  }

  async function loadModels() {
    const select = $("model");
    let response;
    try {
      response = await fetch("/v1/models", { headers: headers() });
    } catch (error) {
      setStatus(`the server did not answer: ${error.message}`, "error");
      return;
    }
    if (!response.ok) {
      const hint = response.status === 401 ? " (type the server's API key above)" : "";
      setStatus(`the model list: ${await errorMessage(response)}${hint}`, "error");
      return;
    }
    const models = (await response.json()).data;
    const previous = select.value;
    select.replaceChildren(
      ...models.map((model) => {
        const option = document.createElement("option");
        option.value = option.textContent = model.id;
        return option;
      }),
    );
    // The first search by default: plain sampling (search null) has no PRM scores to show.
    const fallback = models.find((model) => model.search) || models[0];
    if (models.some((model) => model.id === previous)) select.value = previous;
    else if (fallback) select.value = fallback.id;
    select.dataset.loaded = "true";
  }

  function init() {
    const key = $("api-key");
    key.value = sessionStorage.getItem(KEY_STORAGE) || "";
    key.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, key.value.trim()));
    key.addEventListener("change", loadModels);
    $("search-form").addEventListener("submit", search);
    $("open-form").addEventListener("submit", (event) => {
      event.preventDefault();
      openTree($("tree-id").value);
    });
    loadModels();
    const id = new URLSearchParams(location.search).get("tree");
    if (id) openTree(id);
  }

  init();
})();
