// The job browser's checkboxes (jobs.html, dlq.html): the header's box selects or
// clears every row of the page. Without this script the rows are still selectable.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var all = document.querySelectorAll("input.select-all");
  for (var i = 0; i < all.length; i++) {
    all[i].addEventListener("change", function (event) {
      var form = event.target.form;
      var boxes = form ? form.querySelectorAll("input[type=checkbox][name=id]") : [];
      for (var j = 0; j < boxes.length; j++) { boxes[j].checked = event.target.checked; }
    });
  }
});

// A button with data-confirm-button asks before its form is sent (Delete selected).
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  var question = button && button.getAttribute("data-confirm-button");
  if (question && !window.confirm(question)) { event.preventDefault(); }
});
