"""The form field and widget."""

import numpy as np
import pytest
from django import forms

from tests.testapp.models import Document, Item
from vectorindex import VectorFormField, VectorPreviewWidget, VectorWidget

OUT_OF_RANGE = "expected numbers within float32 range (±3.402823e+38), got"


class ItemForm(forms.ModelForm):
    class Meta:
        model = Item
        fields = ["name", "embedding"]


class PreviewForm(ItemForm):
    """The admin's widget (VectorAdminMixin gives it to vector fields)."""

    class Meta(ItemForm.Meta):
        widgets = {"embedding": VectorPreviewWidget}


def test_model_form_uses_the_vector_field_and_widget():
    field = ItemForm().fields["embedding"]
    assert isinstance(field, VectorFormField) and field.dimensions == 8
    assert isinstance(field.widget, VectorWidget)


def test_accepts_bracketed_text():
    form = ItemForm(data={"name": "x", "embedding": "[1, 2, 3, 4, 5, 6, 7, 8]"})
    assert form.is_valid(), form.errors
    np.testing.assert_array_equal(form.cleaned_data["embedding"], np.arange(1, 9))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected 8 dimensions, got 2."),
        ("1 2 3", "expected a vector written as [1.0, 2.0, …], got the string '1 2 3'."),
        ("[1, 2, 3, 4, 5, 6, 7, NaN]", "expected finite numbers, got nan at position 7."),
        ("[1, 2, 3, 4, 5, 6, 7, nan]", "expected finite numbers, got nan at position 7."),
        ("[inf, 2, 3, 4, 5, 6, 7, 8]", "expected finite numbers, got inf at position 0."),
        ("[1, -inf, 3, 4, 5, 6, 7, 8]", "expected finite numbers, got -inf at position 1."),
        ("[1" + "0" * 400 + ", 2, 3, 4, 5, 6, 7, 8]", f"{OUT_OF_RANGE} 1e+400 at position 0."),
        ("[1, -1" + "0" * 400 + ", 3, 4, 5, 6, 7, 8]", f"{OUT_OF_RANGE} -1e+400 at position 1."),
        ("[1e400, 2, 3, 4, 5, 6, 7, 8]", f"{OUT_OF_RANGE} 1e+400 at position 0."),
        ("[1, 2, 3, 4, 5, 6, 7, 1e39]", f"{OUT_OF_RANGE} 1e+39 at position 7."),
        ("", "This field is required."),
    ],
)
def test_refuses_bad_text(text, message):
    form = ItemForm(data={"name": "x", "embedding": text})
    assert not form.is_valid()
    assert form.errors["embedding"] == [message]
    # Shown again with the error: the text as typed; the admin's widget open on it.
    assert 'aria-invalid="true"' in str(form["embedding"])
    html = str(PreviewForm(data={"name": "x", "embedding": text})["embedding"])
    assert "<details class=\"vectorindex-vector\" open>" in html


@pytest.mark.django_db
def test_saving_through_the_form():
    form = ItemForm(data={"name": "x", "embedding": "[0, 0, 0, 0, 0, 0, 0, 1.5]"})
    item = form.save()
    assert Item.objects.get(pk=item.pk).embedding[-1] == 1.5


def test_a_forms_widget_is_a_text_input_of_the_vector_as_pgvectors_is():
    html = VectorWidget().render("embedding", np.array([1, 2.5, 3], dtype=np.float32))
    assert html == '<input type="text" name="embedding" value="[1.0, 2.5, 3.0]">'
    form = ItemForm(data={"name": "x", "embedding": "[1, 2, 3, 4, 5, 6, 7, 8]"})
    assert 'value="[1, 2, 3, 4, 5, 6, 7, 8]"' in form.as_div() and "required" in str(form["embedding"])


def test_the_admins_widget_renders_a_summary_over_a_collapsed_textarea():
    vector = np.arange(384, dtype=np.float32) / 10
    html = VectorPreviewWidget().render("embedding", vector)
    assert "<details" in html and " open" not in html
    assert "<summary>384 dimensions: [0, 0.1, 0.2, 0.3, 0.4, …]</summary>" in html
    assert "[0.0, 0.1, 0.2," in html and "38.3]</textarea>" in html


def test_a_required_vector_not_given_is_never_hidden():
    """Shut in a closed <details>, a required textarea left empty blocks the submit with nothing to see."""
    html = str(PreviewForm()["embedding"])
    assert "<details class=\"vectorindex-vector\" open>" in html and "required" in html
    html = str(PreviewForm(initial={"embedding": np.ones(8, np.float32)})["embedding"])
    assert "<details class=\"vectorindex-vector\">" in html  # given: closed


def test_an_invalid_submission_re_renders_open():
    form = PreviewForm(data={"name": "x", "embedding": "[1, 2]"})
    html = str(form["embedding"])
    assert "<details class=\"vectorindex-vector\" open>" in html
    assert "not a valid vector" not in html  # [1, 2] is a vector, just the wrong length
    assert "2 dimensions: [1, 2]" in html


def test_blank_optional_field():
    class DocumentForm(forms.ModelForm):
        class Meta:
            model = Document
            fields = ["title", "embedding"]

    form = DocumentForm(data={"title": "t", "embedding": ""})
    assert form.is_valid()
    assert form.cleaned_data["embedding"] is None
    assert 'value=""' not in str(form["embedding"]) and "required" not in str(form["embedding"])
    html = VectorPreviewWidget().render("embedding", "")
    assert "<summary>empty</summary>" in html and "<details class=\"vectorindex-vector\">" in html


def test_has_changed_compares_values_not_text():
    field = VectorFormField(dimensions=3)
    initial = np.array([1, 2, 3], dtype=np.float32)
    assert not field.has_changed(initial, "[1.0, 2, 3]")
    assert field.has_changed(initial, "[1, 2, 4]")
    assert field.has_changed(None, "[1, 2, 4]")
    assert not field.has_changed(None, "")
    assert field.has_changed(initial, "junk")
