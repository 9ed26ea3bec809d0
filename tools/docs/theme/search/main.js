// samkit docs: the theme's search, run in the page instead of a web worker, from an index written
// as a script (search/search_index.js, by tools/docs/hooks.py). Opened from disk (file://), a browser
// refuses both the worker and the request for search_index.json; a <script> it loads.
(function () {
  var index = null, documents = {}, loading = false, minLength = 3, waiting = [];

  function joinUrl(base, path) {
    return base.replace(/\/$/, "") + "/" + path;
  }

  function escapeHtml(value) {
    return value.replace(/&/g, "&amp;").replace(/"/g, "&quot;")
      .replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function loadScript(path, done) {
    var script = document.createElement("script");
    script.src = joinUrl(base_url, path);
    script.onload = done;
    document.head.appendChild(script);
  }

  function build() {
    var data = window.samkit_search_index;
    if (data.config && data.config.separator) {
      lunr.tokenizer.separator = new RegExp(data.config.separator);
    }
    if (data.config && data.config.min_search_length) {
      minLength = data.config.min_search_length;
    }
    data.docs.forEach(function (doc) { documents[doc.location] = doc; });
    index = data.index ? lunr.Index.load(data.index) : lunr(function () {
      this.field("title");
      this.field("text");
      this.ref("location");
      data.docs.forEach(function (doc) { this.add(doc); }, this);
    });
    waiting.splice(0).forEach(function (f) { f(); });
  }

  function whenReady(callback) {
    if (index) return callback();
    waiting.push(callback);
    if (loading) return;
    loading = true;
    loadScript("search/lunr.js", function () { loadScript("search/search_index.js", build); });
  }

  function display(results) {
    var box = document.getElementById("mkdocs-search-results");
    var html = results.map(function (doc) {
      return '<article><h3><a href="' + joinUrl(base_url, doc.location) + '">' + escapeHtml(doc.title) +
        "</a></h3><p>" + escapeHtml(doc.text.substring(0, 200)) + "</p></article>";
    }).join("");
    box.innerHTML = html || "<p>" + (box.getAttribute("data-no-results-text") || "No results found") + "</p>";
  }

  function doSearch() {
    var query = document.getElementById("mkdocs-search-query").value;
    if (query.length < minLength) return display([]);
    whenReady(function () {
      var found;
      try {
        found = index.search(query);
      } catch (e) {  // a query lunr cannot parse (e.g. a trailing ":") is a query with no match
        found = [];
      }
      display(found.map(function (r) { return documents[r.ref]; }));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var input = document.getElementById("mkdocs-search-query");
    if (!input) return;
    input.addEventListener("focus", function () { whenReady(function () {}); });
    input.addEventListener("keyup", doSearch);
    var term = new URLSearchParams(window.location.search).get("q");
    if (term) {
      input.value = term;
      doSearch();
    }
  });
})();
