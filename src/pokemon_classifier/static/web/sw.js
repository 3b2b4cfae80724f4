// The service worker of the site `pokemon-classifier export --web` writes: it keeps every file of
// the site (listed at export, with a version that changes with any file) in the Cache Storage, so
// after the first visit the page, the model and ONNX Runtime load with no network at all.
const VERSION = "__VERSION__";
const FILES = __FILES__;
const CACHE = `pokedex-${VERSION}`;

self.addEventListener("install", (event) => {
  // cache: "reload" skips the HTTP cache, so a new version never stores a stale file
  event.waitUntil(caches.open(CACHE)
    .then((cache) => cache.addAll(FILES.map((f) => new Request(f, { cache: "reload" }))))
    .then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith("pokedex-") && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || new URL(req.url).origin !== self.location.origin) return;
  // cache first (the files of one version never change), the network for anything else
  event.respondWith(caches.open(CACHE)
    .then((cache) => cache.match(req, { ignoreSearch: true }))
    .then((hit) => hit || fetch(req)));
});
