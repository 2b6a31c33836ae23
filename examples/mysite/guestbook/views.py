from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .forms import EntryForm
from .models import Entry


@require_http_methods(["GET", "HEAD", "POST"])
def index(request):
    """The guestbook: the latest entries and a form to sign it.

    A valid POST is saved and answered with a redirect back here (post/redirect/get), so a
    browser's reload does not sign twice; an invalid one shows the form again with its errors.
    CsrfViewMiddleware has already refused a POST without the form's token (403).
    """
    if request.method == "POST":
        form = EntryForm(request.POST)
        if form.is_valid():
            form.save()
            return redirect("guestbook:index")
    else:
        form = EntryForm()
    entries = Entry.objects.all()[:50]
    return render(request, "guestbook/index.html", {"form": form, "entries": entries})
