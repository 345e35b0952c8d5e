// Show upload progress for the stored-file forms: send the form with XMLHttpRequest,
// update a <progress> bar, then show what the server answered (a redirect or the form).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.querySelector("#storedfile_form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  form.addEventListener("submit", function (event) {
    var hasFile = Array.prototype.some.call(
      form.querySelectorAll('input[type="file"]'),
      function (input) { return input.files && input.files.length > 0; }
    );
    if (!hasFile) return;
    event.preventDefault();
    var data = new FormData(form);
    if (event.submitter && event.submitter.name) {
      data.append(event.submitter.name, event.submitter.value);
    }
    var bar = document.createElement("progress");
    bar.className = "files-app-progress";
    bar.max = 100;
    bar.value = 0;
    var label = document.createElement("span");
    label.className = "files-app-progress-label";
    label.textContent = "Uploading…";
    form.prepend(label);
    form.prepend(bar);
    Array.prototype.forEach.call(form.querySelectorAll('[type="submit"]'), function (b) { b.disabled = true; });
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      var percent = Math.floor((e.loaded / e.total) * 100);
      bar.value = percent;
      label.textContent = "Uploading… " + percent + "%";
    });
    xhr.addEventListener("load", function () {
      if (xhr.responseURL && xhr.responseURL !== window.location.href) {
        window.location.href = xhr.responseURL;
        return;
      }
      document.open();
      document.write(xhr.responseText);
      document.close();
    });
    xhr.addEventListener("error", function () {
      label.textContent = "The upload failed: the connection was lost.";
      Array.prototype.forEach.call(form.querySelectorAll('[type="submit"]'), function (b) { b.disabled = false; });
    });
    xhr.send(data);
  });
});
