// The add form's resumable uploader: Uppy's Dashboard with its tus plugin, uploading to
// files_app's tus endpoint. Pause and resume, retries after a dropped connection, and
// (GoldenRetriever) the selection restored after a reload: tus then resumes each file from
// the offset the server has. Without JavaScript the plain form below does the uploading.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var target = document.getElementById("files-app-uppy");
  if (!target || !window.Uppy) return;
  target.parentElement.hidden = false;
  var uppy = new window.Uppy.Uppy({ id: "files-app-admin", autoProceed: false });
  uppy.use(window.Uppy.Dashboard, {
    inline: true,
    target: target,
    height: 340,
    width: "100%",
    showProgressDetails: true,
    proudlyDisplayPoweredByUppy: false,
  });
  uppy.use(window.Uppy.Tus, {
    endpoint: target.dataset.endpoint,
    // PATCHes of 8 MiB: what a proxy's body limit allows, and at most that much is sent
    // again after a drop (the server keeps what arrived of a broken PATCH too).
    chunkSize: 8 * 1024 * 1024,
    headers: { "X-CSRFToken": target.dataset.csrf },
    // Keep trying through a network drop: the next try asks the server how far it got.
    retryDelays: [0, 1000, 2000, 4000, 8000, 15000, 30000],
    removeFingerprintOnSuccess: true,
  });
  if (window.Uppy.GoldenRetriever) uppy.use(window.Uppy.GoldenRetriever);
  // A refusal (413 over a quota or the size limit, 403) says why in its body: show it.
  uppy.on("upload-error", function (file, error) {
    var response = error && error.originalResponse;
    var reason = response && typeof response.getBody === "function" ? response.getBody() : "";
    var note = document.createElement("p");
    note.className = "errornote files-app-upload-error";
    note.textContent = (file && file.name ? file.name + ": " : "") +
      (reason || (error && error.message) || "The upload failed.");
    target.parentElement.appendChild(note);
  });
  uppy.on("complete", function (result) {
    document.body.dataset.filesAppUploaded = String(result.successful.length);
    if (result.successful.length && !result.failed.length) {
      var done = document.createElement("p");
      var link = document.createElement("a");
      link.href = target.dataset.done;
      link.textContent = "See the stored files";
      done.textContent = result.successful.length + " file(s) stored. ";
      done.appendChild(link);
      target.parentElement.appendChild(done);
    }
  });
});
